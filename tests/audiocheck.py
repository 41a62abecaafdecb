"""Looking at audio in tests: whole files read with pydub (an independent reader, not the pipeline's own
decoder, ``pipeline.assembly.decode``), and whether bytes are an MP3 part by the pipeline's own frame check."""

from __future__ import annotations

import io
import warnings

with warnings.catch_warnings():
    # pydub looks for ffmpeg on PATH at import and warns when there is none; decode() points it at ours.
    warnings.simplefilter("ignore", RuntimeWarning)
    # pydub imports the stdlib audioop, which warns on Python 3.11-3.12 (audioop-lts replaces it from 3.13).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

from pipeline import mp3
from pipeline.media import ffmpeg_exe


def decode(data: bytes, fmt: str = "mp3") -> AudioSegment:
    """A whole audio file (an output, an answer) as pydub reads it. MP3 with an explicit codec, so pydub skips
    its ffprobe call (imageio-ffmpeg ships no ffprobe)."""
    AudioSegment.converter = AudioSegment.ffmpeg = ffmpeg_exe()
    if fmt == "mp3":
        return AudioSegment.from_file(io.BytesIO(data), format="mp3", codec="mp3")
    if fmt == "wav":
        return AudioSegment.from_wav(io.BytesIO(data))
    return AudioSegment.from_file(io.BytesIO(data), format=fmt)


def is_mp3(data: bytes) -> bool:
    """Whether ``data`` is a whole MP3 part by the pipeline's own frame check (what a part must pass on arrival)."""
    try:
        mp3.check_part(data)
    except mp3.NotAudio:
        return False
    return True
