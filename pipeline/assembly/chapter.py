"""A chapter file: its parts joined with pauses into ``NN Title.mp3``, tagged, with its subtitles; losslessly
where the parts allow (``lossless``), else decoded and encoded once (``decoded``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.assembly.cues import format_subtitles
from pipeline.assembly.decoded import join_decoded
from pipeline.assembly.encoder import remove
from pipeline.assembly.lossless import join_lossless
from pipeline.assembly.parts import PartSource
from pipeline.assembly.tags import tag_mp3
from pipeline.files import atomic_write
from pipeline.models import Book, Chapter, ChapterAudio, Pause, Segment
from pipeline.names import chapter_path
from pipeline.options import BookOptions


def _pause_ms(pause: Pause, settings: BookOptions) -> int:
    return {
        Pause.SENTENCE: settings.sentence_pause_ms,
        Pause.PARAGRAPH: settings.paragraph_pause_ms,
        Pause.TITLE: settings.title_pause_ms,
        Pause.END: 0,
    }[pause]


def assemble_chapter(
    book: Book,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    out_dir: Path,
    settings: BookOptions,
    *,
    total_chapters: int | None = None,
) -> ChapterAudio:
    """Join ``parts`` (``parts[i]`` speaks ``segments[i]``) with pauses into ``out_dir/NN Title.mp3``, tagged.

    Silence: ``chapter_pad_ms`` before the first and after the last segment; after every other segment the
    pause its ``pause_after`` names. The last segment's own pause is replaced by the pad, so every chapter
    ends alike whatever the chunker marked it with.

    Two ways to join. Lossless, where it applies: every part is MP3 of one stream format, at the chapter's
    sample rate and (when constant) its bitrate, what one endpoint and voice answer, and no loudness
    normalization is asked for; the chapter is then the parts' own frames with pauses of silent frames,
    written once, no decode and no re-encode. Otherwise each part is decoded and the chapter encoded once.

    With ``settings.loudness`` ("ebu" or "acx", ``models.TARGETS``) every part is decoded and levelled: its
    silent edges trimmed (cues and the chapter's length follow the trimmed parts), its gain set to bring it to
    the target, the chapter encoder's limiter holding the ceiling; the result's ``loudness`` sums it up.
    """
    if len(segments) != len(parts):
        raise ValueError(f"{len(segments)} segments but {len(parts)} parts")
    if not segments:
        raise ValueError(f"chapter {chapter.index} has no segments to assemble")
    total = max(total_chapters or len(book.chapters), chapter.index)
    final = out_dir / chapter_path(book, chapter.index, total, chapter.title, settings.output_format)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".part")
    sub_final = final.with_suffix("." + settings.subtitles) if settings.subtitles else None
    title = " ".join(chapter.title.split()) or f"Chapter {chapter.index}"
    last = len(segments) - 1
    # The silence before the first part, then after each part.
    pauses = [settings.chapter_pad_ms] + [
        settings.chapter_pad_ms if i == last else _pause_ms(s.pause_after, settings) for i, s in enumerate(segments)
    ]
    try:
        joined = None
        summary = None
        if settings.part_format == "mp3" and not settings.loudness:
            joined = join_lossless(tmp, chapter, segments, parts, pauses, settings)
        if joined is None:
            joined, summary = join_decoded(tmp, chapter, segments, parts, pauses, settings)
        duration_ms, cues = joined
        tag_mp3(tmp, book, chapter, title, f"{chapter.index}/{total}", settings)
        if sub_final is not None:
            atomic_write(sub_final, format_subtitles(cues, settings.subtitles or "srt"))
        os.replace(tmp, final)  # last, so an existing MP3 always means a complete chapter
    except BaseException:
        remove(tmp)
        raise
    return ChapterAudio(chapter=chapter, path=final, duration_ms=duration_ms, loudness=summary)
