"""The lossless join: a chapter made of its parts' own MP3 frames with silent frames between, no decode and
no re-encode, where every part allows it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline import mp3
from pipeline.assembly.cues import Cue, segment_cues
from pipeline.assembly.parts import PartSource, part_error, read_part
from pipeline.models import Chapter, Segment
from pipeline.options import BookOptions


def join_lossless(
    out: Path,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    pauses: Sequence[int],
    settings: BookOptions,
) -> tuple[int, list[Cue]] | None:
    """The parts' frames in order with silent frames between, one part in memory at a time; None when the
    parts cannot be joined so (another format among them, or another rate or bitrate than the settings')."""
    cues: list[Cue] = []
    kbps = int(settings.bitrate.removesuffix("k"))
    with open(out, "w+b") as fh:
        writer = mp3.LosslessWriter(fh)
        writer.add_silence(pauses[0])
        for i, (segment, part) in enumerate(zip(segments, parts, strict=True)):
            data = read_part(chapter, i, part)
            try:
                info = mp3.check_part(data)
                if info.format.sample_rate != settings.sample_rate or info.bitrate_kbps not in (None, kbps):
                    return None  # the settings ask for another rate or bitrate: only an encode gives it
                span = writer.add_part(data)
            except mp3.FormatMismatch:
                return None
            except mp3.NotAudio as exc:
                raise part_error(chapter, i, str(exc)) from exc
            cues.extend(segment_cues(segment.text, span.start_ms, span.end_ms))
            writer.add_silence(pauses[i + 1])
        result = writer.close()
    return result.duration_ms, cues
