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
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import AudioError, ToolError

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
            raise ToolError(f"${FFMPEG_ENV} names {chosen!r}, which is not an executable; unset it to use ours")
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


# Every ffmpeg this process runs, so that a second Ctrl-C can end them: a thread waiting on one (a chapter being
# joined, an M4B being encoded for minutes) cannot be cancelled, only its process ended.
_tools_lock = threading.Lock()
_tools: set[subprocess.Popen[bytes]] = set()
_tools_stopped = False


def start_tool(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(cmd, **popen)``, known to ``stop_tools`` until ``tool_done``. After a stop nothing new
    starts: ToolError (the run is being abandoned)."""
    with _tools_lock:
        if _tools_stopped:
            raise ToolError(f"not starting {Path(cmd[0]).name}: the run is being abandoned")
        proc = subprocess.Popen(cmd, **popen)
        _tools.add(proc)
    return proc


def tool_done(proc: subprocess.Popen[bytes]) -> None:
    with _tools_lock:
        _tools.discard(proc)


def run_tool(cmd: Sequence[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(cmd, input=data, capture_output=True)``, ended by ``stop_tools`` like every tool."""
    stdin = subprocess.DEVNULL if data is None else subprocess.PIPE
    proc = start_tool(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(data)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        tool_done(proc)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def stop_tools() -> int:
    """End every tool running and start no new one (a run abandoned); returns how many were ended."""
    global _tools_stopped
    with _tools_lock:
        _tools_stopped = True
        running = list(_tools)
    for proc in running:
        if proc.poll() is None:
            proc.kill()
    return len(running)


def allow_tools() -> None:
    """Tools may start again (a new run in this process)."""
    global _tools_stopped
    with _tools_lock:
        _tools_stopped = False


@dataclass(frozen=True)
class _Need:
    """Something of ffmpeg's we use: an encoder, muxer or filter (``ffmpeg -h kind=name`` describes it), and
    for a filter an option value it must accept (``framelog=quiet``: Debian 12's 5.1 knows only info and
    verbose there, and fails on every part)."""

    kind: str
    name: str
    value: str | None = None

    def __str__(self) -> str:
        return f"the {self.name} {self.kind}" + (f" with {self.value}" if self.value else "")


# What each use of ffmpeg needs, by use: every chapter encodes MP3 (and a decoded part is cut and resampled),
# levelling measures and limits, an M4B is AAC in an iPod container.
_NEEDS = {
    "mp3": (_Need("encoder", "libmp3lame"), _Need("filter", "atrim"), _Need("filter", "aresample")),
    "loudness": (_Need("filter", "ebur128", "framelog=quiet"), _Need("filter", "alimiter"), _Need("filter", "aformat")),
    "m4b": (_Need("encoder", "aac"), _Need("muxer", "ipod")),
}


def require_ffmpeg(*uses: str) -> None:
    """Raise ToolError, one line naming the binary and all it lacks, when the ffmpeg named by
    ``$AUDIOBOOK_FFMPEG`` lacks what ``uses`` ("mp3", "loudness", "m4b") need. Each need is probed once a
    process (``ffmpeg -h``, a few ms). Ours is the known build: not probed."""
    if not os.environ.get(FFMPEG_ENV, "").strip():
        return
    exe = ffmpeg_exe()
    missing = list(dict.fromkeys(str(need) for use in uses for need in _NEEDS[use] if not _has(exe, need)))
    if missing:
        raise ToolError(
            f"ffmpeg {exe} (from ${FFMPEG_ENV}) lacks {', '.join(missing)}: name another build in "
            f"${FFMPEG_ENV}, or unset it to use ours"
        )


@functools.cache
def _has(exe: str, need: _Need) -> bool:
    try:
        proc = subprocess.run([exe, "-hide_banner", "-h", f"{need.kind}={need.name}"],
                              capture_output=True, text=True, errors="replace", timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    lines = proc.stdout.splitlines()
    title = f"{need.kind.title()} {need.name}"  # "Filter atrim", "Encoder aac [AAC ...]:"; else "Unknown ..."
    if proc.returncode != 0 or not lines or not (lines[0] == title or lines[0].startswith(title + " ")):
        return False
    if need.value is None:
        return True
    option, _, value = need.value.partition("=")
    # The option's line, then its named values one level deeper: "   framelog  <int> ...", "     quiet  -8 ...".
    for at, line in enumerate(lines):
        if re.match(rf"\s+{re.escape(option)}\s", line):
            depth = len(line) - len(line.lstrip())
            for named in lines[at + 1 :]:
                if len(named) - len(named.lstrip()) <= depth:
                    break
                if named.split()[0] == value:
                    return True
    return False


def to_mp3(data: bytes, *, rate: int = SAMPLE_RATE, bitrate: str = BITRATE) -> bytes:
    """Any audio file ffmpeg can read (a WAV, FLAC or Ogg answer where MP3 was asked for), as a mono MP3 part
    like the API's own: ``rate`` Hz at ``bitrate``, no Xing frame or ID3 tag. AudioError when it cannot."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-ar", str(rate), "-ac", "1",
           "-c:a", "libmp3lame", "-b:a", bitrate, "-write_xing", "0", "-id3v2_version", "0",
           "-f", "mp3", "pipe:1"]  # fmt: skip
    proc = run_tool(cmd, data)
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
    proc = run_tool(cmd, pcm)
    if proc.returncode != 0 or not proc.stdout:
        raise AudioError(f"ffmpeg could not encode {fmt}: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return proc.stdout
