"""ffmpeg as the assembly stage runs it: one encoder process fed PCM on stdin, a one-shot run, and the
one line of its error output worth showing."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from pipeline.errors import AudioError
from pipeline.media import ffmpeg_exe, run_tool, start_tool, tool_done

SAMPLE_BYTES = 2  # signed 16-bit mono PCM throughout
CHUNK = 1 << 16


def frames_of(ms: int, rate: int) -> int:
    return rate * ms // 1000


def ms_of(frames: int, rate: int) -> int:
    return round(frames * 1000 / rate)


def last_line(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error output"


def remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class PcmEncoder:
    """One ffmpeg process that reads s16le mono PCM on stdin and writes ``out`` with ``codec_args``."""

    def __init__(self, out: Path, rate: int, codec_args: Sequence[str], what: str):
        self.what = what
        self.frames = 0
        # stderr goes to a file, not a pipe, so ffmpeg can never block on it; closed in close().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-f", "s16le",
               "-ar", str(rate), "-ac", "1", "-i", "pipe:0", "-ar", str(rate), "-ac", "1", *codec_args,
               "-y", str(out)]  # fmt: skip
        try:
            self._proc = start_tool(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        except OSError as exc:
            self._stderr.close()
            raise AudioError(f"cannot start ffmpeg for {what}: {exc}") from exc

    def _error(self) -> AudioError:
        self._proc.wait()
        self._stderr.seek(0)
        return AudioError(f"ffmpeg failed writing {self.what}: {last_line(self._stderr.read())}")

    def write(self, pcm: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(pcm)
        except (BrokenPipeError, ValueError):
            raise self._error() from None
        self.frames += len(pcm) // SAMPLE_BYTES

    def finish(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise self._error()

    def close(self) -> None:
        """Release everything; kills ffmpeg when ``finish`` was not reached (an error or Ctrl-C)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        tool_done(self._proc)
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._stderr.close()


@contextlib.contextmanager
def encoder(out: Path, rate: int, codec_args: Sequence[str], what: str) -> Iterator[PcmEncoder]:
    enc = PcmEncoder(out, rate, codec_args, what)
    try:
        yield enc
        enc.finish()
    finally:
        enc.close()


def run_ffmpeg(args: Sequence[str], what: str) -> None:
    proc = run_tool([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args])
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg failed {what}: {last_line(proc.stderr)}")
