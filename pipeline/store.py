"""Where finished parts are kept: the resume mechanism.

A part's key hashes everything that changes its sound (synthesizer identity, model, voice, instructions,
speed, format, text) and nothing else, so the same sentence is never paid for twice, whichever book or run
asks for it. A ``PartStore`` keeps parts by key; ``FileStore``, a folder on a local or shared disk, is the one
there is today. Another kind (object storage) is one new class with the same four methods.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pipeline.errors import UsageError
from pipeline.files import atomic_write
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


class PartStore(Protocol):
    """Parts by key. ``put`` is atomic: a reader sees the whole part or none, whatever crashes when."""

    @property
    def location(self) -> str:
        """Where the parts are (a folder or a URL): names the store in messages and in part requests."""
        ...

    def has(self, key: str, fmt: str) -> bool: ...

    def get(self, key: str, fmt: str) -> bytes | None:
        """The part's bytes, or None when it is not there (or cannot be read)."""
        ...

    def put(self, key: str, data: bytes, fmt: str) -> None: ...

    def evict(self, key: str, fmt: str) -> None:
        """Drop a part found to be unusable, so the next run asks for it again."""
        ...

    def check_writable(self) -> None:
        """Raise UsageError now, before the first paid request, when parts could not be kept."""
        ...


class FileStore:
    """Parts as files ``<root>/parts/<2 hex>/<key>.<fmt>``: a layout every version so far has used."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, key: str, fmt: str = "mp3") -> Path:
        return self.root / "parts" / key[:2] / f"{key}.{fmt}"

    def has(self, key: str, fmt: str = "mp3") -> bool:
        try:
            return self.path(key, fmt).stat().st_size > 0
        except OSError:
            return False

    def get(self, key: str, fmt: str = "mp3") -> bytes | None:
        try:
            data = self.path(key, fmt).read_bytes()
        except OSError:
            return None
        return data or None

    def put(self, key: str, data: bytes, fmt: str = "mp3") -> None:
        atomic_write(self.path(key, fmt), data)

    def evict(self, key: str, fmt: str = "mp3") -> None:
        self.path(key, fmt).unlink(missing_ok=True)

    def check_writable(self) -> None:
        try:
            folder = self.root / "parts"
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe.", suffix=".part"):
                pass
        except OSError as exc:
            raise UsageError(
                f"cache folder {self.root} is not writable ({exc.strerror or exc}); set --cache-dir or XDG_CACHE_HOME"
            ) from None


class Stores:
    """One store per distinct location, shared by every book of a run that names it."""

    def __init__(self) -> None:
        self._open: dict[str, PartStore] = {}

    def at(self, location: Path | str) -> PartStore:
        name = str(location)
        if name not in self._open:
            self._open[name] = FileStore(Path(name))
        return self._open[name]

    def __iter__(self) -> Iterator[PartStore]:
        return iter(self._open.values())
