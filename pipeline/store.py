"""Where finished parts are kept: the resume mechanism.

A part's key hashes everything that changes its sound (synthesizer identity, model, voice, instructions,
speed, format, text) and nothing else, so the same sentence is never paid for twice, whichever book or run
asks for it. A ``PartStore`` keeps parts by key: ``FileStore`` in a folder on a local or shared disk,
``ObjectStore`` in a bucket (``s3://bucket/prefix``) that workers on several machines share. Both lay parts out
alike, so a cache folder copied into a bucket still hits. ``Stores.at`` picks one by the location's form.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

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

    remote: bool  # a look costs a network round trip (an event loop asks it from a thread)
    # The first write that failed (a full disk, a read-only folder, a refused bucket), set by ``put`` in the
    # thread that met it: a run sends nothing more for this store from that moment, not once the news arrives.
    failure: OSError | None

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

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self.failure: OSError | None = None

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
        try:
            atomic_write(self.path(key, fmt), data)
        except OSError as exc:
            self.failure = self.failure or exc
            raise

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


EXTRA = "pip install 'audiobook-pipeline[distributed]'"
# Never repeated in a message, should a server or a library quote one back.
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(location: str) -> bool:
    """Whether a location names an object store (``s3://bucket/prefix``, any fsspec URL) rather than a folder."""
    return _URL.match(location) is not None


class ObjectStore:
    """Parts as objects ``<url>/parts/<2 hex>/<key>.<fmt>`` through fsspec (s3fs for ``s3://``).

    ``put`` is one whole-object write, which S3 and its kin make visible at once: a reader sees the old object,
    none, or the whole new one, never part of it (a plain ``file://`` URL writes in place: use a folder path,
    which is a FileStore, for disks). Credentials and the endpoint come from the environment only, as
    botocore reads it (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO or any S3-compatible
    server), never from the URL, so no location or message carries a secret.
    """

    remote = True

    def __init__(self, url: str):
        parts = urlsplit(url)
        if "@" in parts.netloc:  # s3://key:secret@bucket: refused without repeating it
            raise UsageError(
                f"a {parts.scheme}:// cache location must not hold credentials; "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment instead"
            )
        self.url = url.rstrip("/")
        try:
            import fsspec  # here, not at the top: only object-store users need the extra

            # A client of its own rather than fsspec's shared instance: it reads the environment of now.
            fs, root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
        except ImportError as exc:  # fsspec, or the protocol's backend; for other than s3, fsspec names it
            hint = EXTRA if parts.scheme in ("s3", "s3a") or not str(exc) else _reason(exc)
            raise UsageError(f"cache location {self.url} needs object storage support: {hint}") from None
        except ValueError as exc:  # a protocol fsspec does not know
            raise UsageError(f"cache location {self.url}: {_reason(exc)}") from None
        self.fs: Any = fs
        self._root: str = root
        self._client_errors = _client_errors()  # raised as they are, not as OSErrors
        self._failures: tuple[type[Exception], ...] = (OSError, *self._client_errors)
        self.failure: OSError | None = None

    @property
    def location(self) -> str:
        return self.url

    def path(self, key: str, fmt: str = "mp3") -> str:
        return f"{self._root}/parts/{key[:2]}/{key}.{fmt}"

    def has(self, key: str, fmt: str = "mp3") -> bool:
        # A ranged GET of one byte is one request; s3fs's info() follows a missing object's HEAD with a LIST.
        try:
            return bool(self.fs.cat_file(self.path(key, fmt), start=0, end=1))
        except self._failures:  # an empty object is an unsatisfiable range: not a part either
            return False

    def get(self, key: str, fmt: str = "mp3") -> bytes | None:
        # start=0 keeps it one GET: without a range s3fs asks for the size first.
        try:
            data: bytes = self.fs.cat_file(self.path(key, fmt), start=0)
        except self._failures:
            return None
        return data or None

    def put(self, key: str, data: bytes, fmt: str = "mp3") -> None:
        # s3fs's pipe_file sends one put_object below 100 MiB (twice its chunk size; a part is a few MB at most),
        # never a multipart upload. Two workers writing the same key leave one whole object: the last one.
        try:
            self.fs.pipe_file(self.path(key, fmt), data)
        except self._failures as exc:
            error = exc if isinstance(exc, OSError) else _os_error(exc)
            self.failure = self.failure or error
            if error is exc:
                raise
            raise error from exc

    def evict(self, key: str, fmt: str = "mp3") -> None:
        try:
            self.fs.rm_file(self.path(key, fmt))
        except FileNotFoundError:
            pass
        except self._client_errors as exc:
            raise _os_error(exc) from exc

    def check_writable(self) -> None:
        probe = f"{self._root}/parts/.probe.{uuid.uuid4().hex}.part"
        try:
            self.fs.pipe_file(probe, b"probe")
            self.fs.rm_file(probe)
        except self._failures as exc:
            raise UsageError(
                f"cache location {self.url} is not writable ({_reason(exc)}); check that the bucket exists and "
                "the credentials and endpoint (AWS_ENDPOINT_URL) in the environment"
            ) from None


def _client_errors() -> tuple[type[Exception], ...]:
    """What an object store raises besides OSError: s3fs turns S3's answers into OSErrors, but botocore's own
    failures (no connection, no credentials) come through as they are."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # another fsspec backend, without botocore
        return ()
    return (BotoCoreError, ClientError)


def _reason(exc: BaseException) -> str:
    """An error's message on one line, with any credential from the environment blanked out."""
    text = " ".join((getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).split())
    for name in _SECRET_ENV:
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text


def _os_error(exc: Exception) -> OSError:
    """As FileStore fails: the executor reports an OSError from ``put`` as a store failure, not a crash."""
    return OSError(errno.EIO, _reason(exc))


class Stores:
    """One store per distinct location, shared by every book of a run that names it: a URL with a scheme
    (``s3://bucket/prefix``) is an ObjectStore, anything else a folder."""

    def __init__(self) -> None:
        self._open: dict[str, PartStore] = {}

    def at(self, location: Path | str) -> PartStore:
        name = str(location)
        if name not in self._open:
            self._open[name] = ObjectStore(name) if is_url(name) else FileStore(Path(name))
        return self._open[name]

    def __iter__(self) -> Iterator[PartStore]:
        return iter(self._open.values())
