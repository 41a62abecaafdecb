"""Subtitles: a part's cues (a sentence or two each, timed within the part) and SRT or WebVTT text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.chunker import split_sentences


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


CUE_MAX_CHARS = 160  # two sentences share a cue only while they stay this short together: readable at a glance


def segment_cues(text: str, start_ms: int, end_ms: int) -> list[Cue]:
    """Cues for one part: one or two sentences each, never across a paragraph break (a line break in a packed
    segment), timed inside the part in proportion to their characters, the last ending at the part's real end.
    """
    groups: list[str] = []
    for paragraph in text.split("\n"):
        spans, at = [], 0
        for sentence in split_sentences(paragraph):  # exact substrings, in order: their spans by search
            at = paragraph.index(sentence, at)
            spans.append((at, at + len(sentence)))
            at += len(sentence)
        group: list[tuple[int, int]] = []
        for span in spans:
            if group and (len(group) == 2 or span[1] - group[0][0] > CUE_MAX_CHARS):
                groups.append(paragraph[group[0][0] : group[-1][1]])  # as written: no space inserted in CJK
                group = []
            group.append(span)
        if group:
            groups.append(paragraph[group[0][0] : group[-1][1]])
    groups = groups or [text]
    total = max(1, sum(len(g) for g in groups))
    cues, done = [], 0
    for words in groups:
        begin = start_ms + (end_ms - start_ms) * done // total
        done += len(words)
        cues.append(Cue(begin, start_ms + (end_ms - start_ms) * done // total, words))
    return cues


def _timestamp(ms: int, sep: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def format_subtitles(cues: Sequence[Cue], fmt: str) -> str:
    """SRT or WebVTT text: one cue per segment, text on one line (a blank line would end the cue)."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"unknown subtitle format {fmt!r}")
    blocks = ["WEBVTT"] if fmt == "vtt" else []
    sep = "." if fmt == "vtt" else ","
    for number, cue in enumerate(cues, 1):
        text = " ".join(cue.text.split()).replace("-->", "→")
        if fmt == "vtt":  # WebVTT cue text is markup: escape what would start a tag or an entity
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        timing = f"{_timestamp(cue.start_ms, sep)} --> {_timestamp(cue.end_ms, sep)}"
        blocks.append(f"{number}\n{timing}\n{text}")
    return "\n\n".join(blocks) + "\n"
