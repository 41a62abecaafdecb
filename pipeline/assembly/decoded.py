"""The decoded join: each part decoded to PCM (levelled on the way when a loudness target is asked for) and
the chapter encoded once by one ffmpeg encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import media, mp3
from pipeline.assembly import loudness
from pipeline.assembly.cues import Cue, segment_cues
from pipeline.assembly.decode import decode_part_pcm
from pipeline.assembly.encoder import SAMPLE_BYTES, PcmEncoder, encoder, frames_of, ms_of
from pipeline.assembly.parts import PartSource, part_error, read_part
from pipeline.errors import ToolError
from pipeline.models import Chapter, Segment
from pipeline.options import BookOptions

# LAME's quality (-q, ffmpeg's -compression_level) for a chapter encoded from levelled parts. It sets how hard
# LAME works (noise shaping, Huffman search), not the bitrate: CBR files are the same size. At 7 LAME still runs
# its psychoacoustic model (block switching) but shapes no noise. At 128 kbps for mono 24 kHz speech (5 bits a
# sample) that costs nothing audible; by the numbers it is cleaner: the default's shaping lets noise rise to what
# its model calls masked, q 7 just quantizes finely. Measured on 15 minutes of eSpeak speech levelled to -18 LUFS,
# against LAME's default (q 3; q 5 measures alike): LAME alone 355x vs 166x real time; SNR (gain-compensated)
# 45 vs 24 dB; wideband PESQ 4.59 vs 4.15 (16 excerpts of 20 s); a whole levelled 30-minute chapter 14 vs 19 s of
# CPU. Its gain is the default's (LAME_GAIN_DB, -0.45 dB: tested). q 9 gives q 7's bytes. The plain decoded path
# keeps LAME's default, so a chapter made without levelling stays byte for byte what it was.
LEVELLED_MP3_QUALITY = 7


def _tool_error(chapter: Chapter, index: int, exc: ToolError) -> ToolError:
    """ffmpeg failed on a part our frame check accepts (or that has no check of ours, like WAV): the machine's
    fault, so the part stays cached, paid for, and the chapter fails naming the tool."""
    return ToolError(f"chapter {chapter.index} ({chapter.title!r}), segment {index}: {exc}; the part is kept")


def _load_part(chapter: Chapter, index: int, part: PartSource, fmt: str, rate: int) -> bytes:
    """The part as s16le mono PCM at ``rate``; PartDecodeError names chapter and segment."""
    data = read_part(chapter, index, part)
    try:
        pcm = decode_part_pcm(data, rate, fmt=fmt)  # an MP3 read by its frames: a single frame decodes too
    except mp3.NotAudio as exc:  # our own frame check: the part is bad, and only then is it dropped
        raise part_error(chapter, index, str(exc)) from exc
    except ToolError as exc:
        raise _tool_error(chapter, index, exc) from exc
    if not pcm:
        raise part_error(chapter, index, "it decodes to no sound at all")
    return pcm


def _load_levelled(
    chapter: Chapter,
    index: int,
    part: PartSource,
    fmt: str,
    rate: int,
    target: loudness.LoudnessTarget,
    previous: loudness.PartLevel | None,
) -> loudness.LevelledPart:
    """The part decoded and measured by one ffmpeg, trimmed at its silent edges and brought to ``target``
    (``previous``: the part before it, for a part too short to measure); PartDecodeError as ``_load_part``."""
    data = read_part(chapter, index, part)
    try:
        decoded = loudness.decode_and_measure(data, fmt, rate, true_peak=target.measures_true_peak)
    except mp3.NotAudio as exc:
        raise part_error(chapter, index, str(exc)) from exc
    except ToolError as exc:
        raise _tool_error(chapter, index, exc) from exc
    if not decoded.pcm:
        raise part_error(chapter, index, "it decodes to no sound at all")
    return loudness.level_part(decoded, target, previous=previous)


def _decoded_parts(
    chapter: Chapter, parts: Sequence[PartSource], fmt: str, rate: int, target: loudness.LoudnessTarget | None
) -> Generator[tuple[bytes, loudness.PartLevel | None], None, None]:
    """Each part's PCM in order, the next one decoding in a helper thread meanwhile; with a ``target``, each
    part levelled (trimmed, its gain applied) and its level, else the part as decoded and None.

    The decoder is an ffmpeg subprocess, so decoding part i+1 overlaps encoding part i on another core
    (measured on 2 cores: 30 minutes of parts went from ~143x to 160-210x real time). At most two parts
    are held in memory. Levelling runs in the helper too: part i+1 is submitted only once part i is done,
    so its ``previous`` level is known, and the parts are levelled in order as ``level_part`` needs.
    """

    def load(index: int, previous: loudness.PartLevel | None) -> tuple[bytes, loudness.PartLevel | None]:
        if target is None:
            return _load_part(chapter, index, parts[index], fmt, rate), None
        levelled = _load_levelled(chapter, index, parts[index], fmt, rate, target, previous)
        return levelled.pcm, levelled.level

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode-part") as pool:
        try:
            ahead = pool.submit(load, 0, None) if parts else None
            for i in range(len(parts)):
                assert ahead is not None
                pcm, level = ahead.result()
                following = i + 1
                if following < len(parts):
                    ahead = pool.submit(load, following, level)
                yield pcm, level
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def join_decoded(
    out: Path,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    pauses: Sequence[int],
    settings: BookOptions,
) -> tuple[tuple[int, list[Cue]], loudness.ChapterLoudness | None]:
    """Each part decoded to PCM (the next one while this one is encoded) and the chapter encoded once; with a
    loudness target, each part levelled on the way and the encoder limiting, and the chapter's loudness."""
    rate = settings.sample_rate
    target = loudness.TARGETS[settings.loudness] if settings.loudness else None
    media.require_ffmpeg("mp3", *(["loudness"] if target is not None else []))  # before a part is decoded
    silence: dict[int, bytes] = {}

    def pad(enc: PcmEncoder, ms: int) -> None:
        n = frames_of(ms, rate)
        if n:
            enc.write(silence.setdefault(n, bytes(n * SAMPLE_BYTES)))

    cues: list[Cue] = []
    levels: list[loudness.PartLevel] = []
    codec = ["-c:a", "libmp3lame", "-b:a", settings.bitrate, "-id3v2_version", "0", "-write_xing", "1",
             "-map_metadata", "-1", "-f", "mp3"]  # fmt: skip
    if target is not None:
        limiter = target.encoder_filter(rate)
        codec = [*(["-af", limiter] if limiter else []), "-compression_level", str(LEVELLED_MP3_QUALITY), *codec]
    with (
        encoder(out, rate, codec, f"chapter {chapter.index} to {out}") as enc,
        contextlib.closing(_decoded_parts(chapter, parts, settings.part_format, rate, target)) as decoded,
    ):
        pad(enc, pauses[0])
        for i, (segment, (pcm, level)) in enumerate(zip(segments, decoded, strict=True)):
            start = enc.frames
            enc.write(pcm)  # levelled: trimmed, so the cues are timed by what is really written
            cues.extend(segment_cues(segment.text, ms_of(start, rate), ms_of(enc.frames, rate)))
            if level is not None:
                levels.append(level)
            pad(enc, pauses[i + 1])
        total_frames = enc.frames
    summary = None
    if target is not None:
        silent = total_frames - sum(level.samples for level in levels)
        summary = loudness.chapter_loudness(levels, silence_samples=silent, rate=rate)
    return (ms_of(total_frames, rate), cues), summary
