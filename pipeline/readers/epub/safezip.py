"""The archive: a zip checked for bombs and climbing names before anything is read, with every read capped.
Nothing is ever extracted to disk."""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from pathlib import Path

from pipeline.errors import InputError

MB = 1024 * 1024
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 50 * MB  # declared or actual uncompressed size of one member
MAX_TOTAL_BYTES = 200 * MB  # declared, and actually read, over the whole archive
MAX_RATIO = 100  # deflated XHTML is ~3-10x; zeros are ~1000x
RATIO_FLOOR = 1 * MB  # tiny members may compress absurdly well without harm
MAX_COVER_BYTES = 20 * MB


def _check_directory_size(path: Path, label: str) -> None:
    """Refuse an archive that claims more members than any book has *before* zipfile builds an object per
    member: the end-of-central-directory record (and its ZIP64 twin) states the count up front."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_start = max(0, size - 65536 - 22)  # the record sits within the last 64 KB comment + 22 bytes
        handle.seek(tail_start)
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return  # not a zip: zipfile will say so
        entries, directory = struct.unpack_from("<HI", tail, at + 10)
        locator = at - 20
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0 and tail[locator:].startswith(b"PK\x06\x07"):
            (record,) = struct.unpack_from("<Q", tail, locator + 8)
            handle.seek(record)
            zip64 = handle.read(56)
            if zip64.startswith(b"PK\x06\x06") and len(zip64) >= 48:
                entries, directory = struct.unpack_from("<QQ", zip64, 32)
    if entries > MAX_MEMBERS or directory > MAX_MEMBERS * 1024:
        raise InputError(
            f"{label}: the archive's directory lists {entries} files in {directory} bytes "
            f"(limit {MAX_MEMBERS} files); refusing it"
        )


def _article(kind: str) -> str:
    return "an" if kind[:1] in "AEFHILMNORSX" else "a"


class SafeZip:
    """A zip archive checked for bombs and climbing names before anything is read, with every read capped."""

    def __init__(self, path: Path, kind: str = "EPUB") -> None:
        self.label = path.name
        try:
            _check_directory_size(path, self.label)
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"{self.label}: not {_article(kind)} {kind} (not a readable zip archive: {exc})") from None
        self._read_total = 0
        self._names: dict[str, str] = {}
        try:
            self._validate()
        except BaseException:
            self._zip.close()
            raise

    def _validate(self) -> None:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"{self.label}: {len(infos)} files in the archive (limit {MAX_MEMBERS}); refusing it")
        declared = 0
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name) or "\0" in name:
                raise InputError(f"{self.label}: archive member {name!r} points outside the book; refusing it")
            if info.flag_bits & 0x1:
                raise InputError(f"{self.label}: archive member {name!r} is password-protected")
            if info.file_size > MAX_MEMBER_BYTES:
                raise InputError(
                    f"{self.label}: {name!r} declares {info.file_size // MB} MB uncompressed "
                    f"(limit {MAX_MEMBER_BYTES // MB} MB); refusing a possible zip bomb"
                )
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise InputError(
                    f"{self.label}: {name!r} expands {info.file_size // max(info.compress_size, 1)}-fold "
                    f"(limit {MAX_RATIO}); refusing a possible zip bomb"
                )
            declared += info.file_size
            self._names.setdefault(name.casefold(), name)
            self._names[name] = name
        if declared > MAX_TOTAL_BYTES:
            raise InputError(
                f"{self.label}: {declared // MB} MB uncompressed in total "
                f"(limit {MAX_TOTAL_BYTES // MB} MB); refusing a possible zip bomb"
            )

    def resolve(self, name: str) -> str | None:
        """The member's real name; EPUBs made on case-insensitive systems sometimes get the case wrong."""
        return self._names.get(name) or self._names.get(name.casefold())

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        real = self.resolve(name)
        if real is None:
            raise KeyError(name)
        try:
            with self._zip.open(real) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise InputError(f"{self.label}: {real!r} is damaged ({exc})") from None
        if len(data) > limit:
            raise InputError(f"{self.label}: {real!r} is larger than {limit // MB} MB; refusing it")
        self._read_total += len(data)
        if self._read_total > MAX_TOTAL_BYTES:
            raise InputError(f"{self.label}: more than {MAX_TOTAL_BYTES // MB} MB to decompress; refusing it")
        return data

    def names(self) -> list[str]:
        return [info.filename for info in self._zip.infolist()]

    def close(self) -> None:
        self._zip.close()
