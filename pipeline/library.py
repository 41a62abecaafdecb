"""A library of finished books: ``LIBRARY/Author/[Series/]Title/``, the layout Audiobookshelf scans (its
scandir.js: the folder holding the audio is the title, the one above the series when there are two more, the
top one the author).

A book is made in a work folder (``LIBRARY/.audiobook-work/<source>/``: a dot-folder, which Audiobookshelf
never scans, holding report.json and every chapter, so a rerun resumes and pays for nothing twice) and, once
complete, published: its files are linked (copied across file systems) into ``.<Title>.incoming-*`` beside
its place, also a dot-folder, then renamed into place. A book already there is swapped with the new one in
one step (Linux's renameat2 RENAME_EXCHANGE) and the old copy removed afterwards, so a scan sees the old book
or the new one, never half of one, nor a gap; where the exchange is not available (other systems, some file
systems) the old folder is renamed aside first, a gap of one rename.

``request_scan`` asks an Audiobookshelf server to scan the library afterwards: ``POST /api/libraries/:id/scan``
with the bearer token from ``$AUDIOBOOKSHELF_TOKEN``; the id is that of the library one of whose folders
holds the library folder (``GET /api/libraries``). A failure there is a warning: the book is already in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from pipeline.bookfiles import METADATA_JSON
from pipeline.errors import UsageError
from pipeline.models import Book, BookInfo
from pipeline.names import CHAPTER_FOLDERS, IGNORE_MARK, safe_folder_name
from pipeline.report import REPORT_NAME, BookStatus

log = logging.getLogger("audiobook")

WORK_FOLDER = ".audiobook-work"
TOKEN_ENV = "AUDIOBOOKSHELF_TOKEN"
UNKNOWN_AUTHOR = "Unknown Author"


def book_folder(library: Path, book: Book) -> Path:
    """Where the book belongs: ``library/Author/[Series/]Title``, each name made safe for any file system."""
    parts = [safe_folder_name(book.author or "", UNKNOWN_AUTHOR)]
    if book.info.series:
        parts.append(safe_folder_name(book.info.series, "Series"))
    parts.append(safe_folder_name(book.title, "Audiobook"))
    return library.joinpath(*parts)


def work_folder(library: Path, name: str) -> Path:
    """The folder a book of the library is made in (hidden from scans), named after its source file."""
    return library / WORK_FOLDER / safe_folder_name(name, "book")


def published_files(report: Mapping[str, Any]) -> list[str]:
    """What a library should see of a finished book (its report.json), relative to its folder: the M4B alone,
    or the chapter MP3s (with "both", the M4B and the MP3 folder a scan skips), the playlist, the report and
    the library files."""
    names = [n for n in (report.get("m4b"), *report.get("book_files", ()), REPORT_NAME) if isinstance(n, str) and n]
    hidden = CHAPTER_FOLDERS["m4b"] + "/"
    chapters = [c["file"] for c in report.get("chapters", []) if isinstance(c.get("file"), str)]
    if not report.get("m4b") or not all(c.startswith(hidden) for c in chapters):
        names += chapters
        if isinstance(report.get("playlist"), str):
            names.append(report["playlist"])
        names += [str(Path(c).with_suffix(s)) for c in chapters for s in (".srt", ".vtt")]  # where they exist
    return [n for n in names if _inside(n)]


def _inside(name: str) -> bool:
    """A relative name with no way out of its folder (a report is a file anyone could edit)."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def publish(work: Path, destination: Path) -> Path:
    """Put the finished book made in ``work`` at ``destination`` in one step (see the module's note). Only a
    complete book (its report says done) is published: an unfinished one never replaces a finished one."""
    try:
        report = json.loads((work / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot place {work} in the library: no readable {REPORT_NAME} ({exc})") from None
    if not isinstance(report, dict) or report.get("status") not in (BookStatus.DONE, BookStatus.UNVERIFIED):
        raise UsageError(f"{work}: the book is not finished, so it is not placed in the library")
    destination.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=f".{destination.name[:60]}.incoming-", dir=destination.parent))
    try:
        for name in published_files(report):
            source = work / name
            if name.endswith((".srt", ".vtt")) and not source.is_file():
                continue
            target = incoming / name
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, target)
            ignore = source.parent / IGNORE_MARK
            if ignore.is_file() and not (target.parent / IGNORE_MARK).exists():
                (target.parent / IGNORE_MARK).touch()
        os.chmod(incoming, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the book from a server's own user
        _move_into_place(incoming, destination)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    return destination


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where it can be (every file we write is replaced by rename, never rewritten in place, so
    the library's copy never changes under a player), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _move_into_place(incoming: Path, destination: Path) -> None:
    if not destination.exists():
        try:
            os.rename(incoming, destination)
            return
        except OSError:
            if not destination.exists():
                raise  # else another run put one there meanwhile: exchange with it
    if _exchange(incoming, destination):
        shutil.rmtree(incoming, ignore_errors=True)  # holds the old book now
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name[:60]}.old-", dir=destination.parent))
    os.rename(destination, old / "book")
    os.rename(incoming, destination)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------ Audiobookshelf scan


def request_scan(
    url: str,
    library: Path,
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str | None:
    """Ask the Audiobookshelf server at ``url`` to scan the library whose folder holds ``library``. Returns
    None when asked, else one line on why not (for a warning; never raises for the server's failings)."""
    token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    if not token:
        return f"not asked to scan: set ${TOKEN_ENV} to an API token of an Audiobookshelf admin"
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(timeout=20, headers=headers, transport=transport) as client:
            answer = client.get(f"{base}/api/libraries")
            if answer.status_code != 200:
                return f"{base}/api/libraries answered HTTP {answer.status_code}"
            library_id = _library_for(answer.json().get("libraries", []), library)
            if library_id is None:
                return f"no library of {base} has {library} among its folders"
            answer = client.post(f"{base}/api/libraries/{library_id}/scan")
            if answer.status_code != 200:
                return f"scan of library {library_id} answered HTTP {answer.status_code}"
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return f"cannot reach {base}: {exc}"
    log.info("asked %s to scan library %s", base, library_id)
    return None


def _library_for(libraries: Iterable[object], folder: Path) -> str | None:
    """The id of the library one of whose folders is ``folder`` or holds it; else, when the server has one
    book library only (it may see the folder under another path, from a container), that one."""
    found: list[dict[str, Any]] = [lib for lib in libraries if isinstance(lib, dict)]
    target = folder.resolve()
    for lib in found:
        for f in lib.get("folders") or []:
            path = f.get("fullPath") if isinstance(f, dict) else None
            if isinstance(path, str) and path:
                with contextlib.suppress(OSError, ValueError):
                    root = Path(path).resolve()
                    if target == root or root in target.parents:
                        return str(lib.get("id"))
    books = [lib for lib in found if lib.get("mediaType", "book") == "book"]
    return str(books[0].get("id")) if len(books) == 1 else None


def destination(library: Path, work: Path) -> Path:
    """Where the book made in ``work`` belongs, by the metadata.json its finished run wrote."""
    try:
        meta = json.loads((work / METADATA_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot place {work} in the library: no readable {METADATA_JSON} ({exc})") from None
    authors = meta.get("authors") or []
    series = (meta.get("series") or [None])[0]
    name = parse_series(series)[0] if isinstance(series, str) else None
    book = Book(
        title=str(meta.get("title") or "Audiobook"),
        chapters=(),
        author=", ".join(map(str, authors)) or None,
        info=BookInfo(series=name),
    )
    return book_folder(library, book)


def parse_series(text: str) -> tuple[str, str | None]:
    """ "Name #2" -> ("Name", "2"), as Audiobookshelf reads a series string."""
    name, sep, index = text.rpartition(" #")
    return (name, index) if sep and index and " " not in index else (text, None)


def place(work: Path, library: Path, abs_url: str | None = None, *, scan: bool = True) -> Path:
    """Publish the finished book made in ``work`` into ``library``; with ``abs_url`` ask Audiobookshelf to
    scan it (a failure there is a warning)."""
    target = destination(library, work)
    try:
        publish(work, target)
    except OSError as exc:
        raise UsageError(f"cannot place {work} in the library {library}: {exc.strerror or exc}") from None
    if abs_url and scan:
        ask_scan(abs_url, library)
    return target


def ask_scan(abs_url: str, library: Path) -> None:
    problem = request_scan(abs_url, library)
    if problem:
        log.warning("Audiobookshelf: %s (the books are in place: scan the library from its page)", problem)


def place_books(library: Path, abs_url: str | None, books: Iterable[tuple[Path, str]]) -> list[Path]:
    """A batch's books: each finished now is placed (replacing the copy there), an unchanged one only when
    the library lacks it; one scan afterwards when any was placed. A book that cannot be placed is logged
    and the rest go on."""
    placed = []
    for work, status in books:
        if status not in ("done", "unverified", "unchanged"):
            continue
        try:
            if status == "unchanged" and destination(library, work).exists():
                continue
            placed.append(place(work, library, scan=False))
        except UsageError as exc:
            log.error("%s", exc)
    for path in placed:
        log.info("in the library: %s", path)
    if placed and abs_url:
        ask_scan(abs_url, library)
    return placed
