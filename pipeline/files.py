"""Writing files so that a crash never leaves a half-written one under its final name."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to disk, then renamed.

    The temporary name starts with a dot and ends in ``.part``, so it never looks like a finished file (nor
    like a chapter, a report or a cached part). A crash at any moment leaves the old file or the new one. The file
    gets the permissions of any new file (0666 less the umask), not mkstemp's 0600: a media server running as
    another user must read the playlist, subtitles and report as it reads the chapters."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".part")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it, which no thread should see)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
