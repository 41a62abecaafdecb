"""Content-addressed store of audio parts: the resume mechanism.

A part's key hashes everything that changes its sound (synthesizer identity, model, voice, instructions,
speed, format, text) and nothing else, so the same sentence is never paid for twice, whichever book or run
asks for it. Files are written to a temporary name in the same folder, flushed to disk, then renamed: a crash
at any moment leaves either the whole part or no part, never a half file that would count as a hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.models import VoiceSpec

KEY_VERSION = 1  # bump when the meaning of a cached part changes


def part_key(identity: str, spec: VoiceSpec, text: str) -> str:
    fmt = spec.response_format or "mp3"
    payload = {
        "v": KEY_VERSION,
        "synth": identity,
        "model": spec.model,
        "voice": spec.voice,
        "instructions": spec.instructions,
        "speed": spec.speed,
        "format": fmt,
        "text": text,
    }
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class PartCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def check_writable(self) -> None:
        """Fail before the first paid request, not after it, when parts could not be kept."""
        try:
            folder = self.root / "parts"
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".tmp"):
                pass
        except OSError as exc:
            raise UsageError(
                f"cache folder {self.root} is not writable ({exc.strerror or exc}); set --cache-dir or XDG_CACHE_HOME"
            ) from None

    def path(self, key: str, fmt: str = "mp3") -> Path:
        return self.root / "parts" / key[:2] / f"{key}.{fmt}"

    def get(self, key: str, fmt: str = "mp3") -> Path | None:
        p = self.path(key, fmt)
        return p if p.is_file() and p.stat().st_size > 0 else None

    def put(self, key: str, data: bytes, fmt: str = "mp3") -> Path:
        dest = self.path(key, fmt)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{key[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def evict(self, key: str, fmt: str = "mp3") -> None:
        """Drop a part found to be undecodable, so the next run asks for it again."""
        self.path(key, fmt).unlink(missing_ok=True)
