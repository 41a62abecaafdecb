"""ffmpeg location and the few audio primitives every stage shares (a part is decoded in one place only:
``pipeline.assembly.decode``).

We use one known ffmpeg build: the static ffmpeg shipped by the ``imageio-ffmpeg`` wheel,
so nothing outside pip is required and every machine runs the same filters (Debian 12's ffmpeg 5.1, for one,
lacks ``ebur128=framelog``). ``$AUDIOBOOK_FFMPEG`` names another binary explicitly; an ffmpeg that happens to be
on PATH is never taken by accident. That build has no ffprobe: nothing here needs one.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from pipeline.errors import AudioError

# Defaults documented by the API contract: 24 kHz mono MP3 at 128 kbps.
SAMPLE_RATE = 24_000
BITRATE = "128k"


FFMPEG_ENV = "AUDIOBOOK_FFMPEG"  # an explicit ffmpeg binary (a path, or a name looked up on PATH)


@functools.cache
def ffmpeg_exe() -> str:
    chosen = os.environ.get(FFMPEG_ENV, "").strip()
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise AudioError(f"${FFMPEG_ENV} names {chosen!r}, which is not an executable; unset it to use ours")
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def encode_pcm(
    pcm: bytes,
    *,
    in_rate: int,
    channels: int = 1,
    out_rate: int = SAMPLE_RATE,
    bitrate: str = BITRATE,
    fmt: str = "mp3",
) -> bytes:
    """Encode signed 16-bit little-endian PCM to ``fmt`` (MP3 by default) with one ffmpeg process."""
    codec = {"mp3": ["-c:a", "libmp3lame", "-b:a", bitrate], "wav": ["-c:a", "pcm_s16le"]}
    if fmt not in codec:
        raise AudioError(f"cannot encode to {fmt!r}; supported: {', '.join(codec)}")
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "s16le",
        "-ar",
        str(in_rate),
        "-ac",
        str(channels),
        "-i",
        "pipe:0",
        "-ar",
        str(out_rate),
        "-ac",
        "1",
        *codec[fmt],
        "-f",
        fmt,
        "pipe:1",
    ]
    proc = subprocess.run(cmd, input=pcm, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise AudioError(f"ffmpeg could not encode {fmt}: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout
