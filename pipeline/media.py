"""ffmpeg location and the few audio primitives every stage shares.

pydub needs an ffmpeg binary. We use one known build: the static ffmpeg shipped by the ``imageio-ffmpeg`` wheel,
so nothing outside pip is required and every machine runs the same filters (Debian 12's ffmpeg 5.1, for one,
lacks ``ebur128=framelog``). ``$AUDIOBOOK_FFMPEG`` names another binary explicitly; an ffmpeg that happens to be
on PATH is never taken by accident. That build has no ffprobe, so MP3 is always decoded with an explicit
``format`` and ``codec`` (pydub then skips its ffprobe call).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import warnings

with warnings.catch_warnings():
    # pydub looks for ffmpeg on PATH at import and warns when there is none; we point it at one below.
    warnings.simplefilter("ignore", RuntimeWarning)
    # pydub imports the stdlib audioop, which warns on Python 3.11-3.12 (audioop-lts replaces it from 3.13).
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

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


def configure_pydub() -> None:
    AudioSegment.converter = ffmpeg_exe()
    AudioSegment.ffmpeg = ffmpeg_exe()


def looks_like_mp3(data: bytes) -> bool:
    """Cheap sniff: an ID3v2 tag or an MPEG audio frame header at the start (no decoding)."""
    if len(data) < 4:
        return False
    if data[:3] == b"ID3":
        return len(data) > 10
    b0, b1, b2 = data[0], data[1], data[2]
    if b0 != 0xFF or (b1 & 0xE0) != 0xE0:
        return False
    version, layer = (b1 >> 3) & 0b11, (b1 >> 1) & 0b11
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 0b11
    return version != 0b01 and layer != 0 and bitrate_index not in (0, 15) and rate_index != 3


def decode(data: bytes, fmt: str = "mp3") -> AudioSegment:
    """Decode a complete audio file held in memory; raises AudioError when it is not decodable."""
    configure_pydub()
    try:
        if fmt == "mp3":
            return AudioSegment.from_file(io.BytesIO(data), format="mp3", codec="mp3")
        if fmt == "wav":
            return AudioSegment.from_wav(io.BytesIO(data))
        return AudioSegment.from_file(io.BytesIO(data), format=fmt)
    except Exception as exc:  # pydub raises CouldntDecodeError, IndexError, ... on bad input
        raise AudioError(f"audio could not be decoded ({fmt}): {str(exc).splitlines()[0][:200]}") from exc


def to_mp3(data: bytes, *, rate: int = SAMPLE_RATE, bitrate: str = BITRATE) -> bytes:
    """Any audio file ffmpeg can read (a WAV, FLAC or Ogg answer where MP3 was asked for), as a mono MP3 part
    like the API's own: ``rate`` Hz at ``bitrate``, no Xing frame or ID3 tag. AudioError when it cannot."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-ar", str(rate), "-ac", "1",
           "-c:a", "libmp3lame", "-b:a", bitrate, "-write_xing", "0", "-id3v2_version", "0",
           "-f", "mp3", "pipe:1"]  # fmt: skip
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise AudioError(f"ffmpeg could not convert it to mp3: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout


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
