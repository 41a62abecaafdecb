"""One reader per format, and ``read_book`` to pick the right one: path -> ``Book``."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book
from pipeline.textfacts import detect_language

TEXT_SUFFIXES = frozenset({".txt", ".text"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
EPUB_SUFFIXES = frozenset({".epub"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
# Every suffix a reader is chosen by: what `batch FOLDER` and a job file's globs take for a book.
BOOK_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | EPUB_SUFFIXES | HTML_SUFFIXES

# Formats people try that we cannot read: refused by name rather than misread (a .docx is a zip, as an EPUB
# is; a PDF's bytes would be read aloud as text).
UNSUPPORTED_SUFFIXES = {
    ".pdf": "PDF",
    ".doc": "DOC",
    ".docx": "DOCX",
    ".odt": "ODT",
    ".rtf": "RTF",
    ".mobi": "MOBI",
    ".azw": "AZW",
    ".azw3": "AZW3",
    ".djvu": "DjVu",
    ".pages": "Pages",
}
_SUPPORTED = "supported: .txt .md .html .epub"


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(2048)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc


def _signature(head: bytes) -> str | None:
    """The unsupported format the first bytes give away, whatever the file is called."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if start.startswith(b"%PDF-"):
        return "PDF"
    if start.startswith(b"{\\rtf"):
        return "RTF"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: .doc and other old Office files
        return "DOC"
    if head[60:68] == b"BOOKMOBI":
        return "MOBI"
    if head.startswith(b"AT&TFORM"):
        return "DjVu"
    return None


def _refuse_unsupported(path: Path) -> None:
    """Raise InputError naming the format when ``path`` is one we cannot read, by its suffix or its bytes."""
    suffix = path.suffix.lower()
    fmt = UNSUPPORTED_SUFFIXES.get(suffix)
    note = ""
    if fmt is None:
        fmt = _signature(_head(path))
        if fmt is None:
            return
        note = f" (the file is a {fmt} despite its name)" if suffix else f" (the file is a {fmt})"
    raise InputError(f"{path}: {fmt} is not supported{note}; convert it to EPUB, HTML or text first ({_SUPPORTED})")


def _sniff(path: Path) -> str:
    """The format of a file whose suffix says nothing: zip magic is an EPUB, an HTML tag is HTML."""
    head = _head(path)
    if head.startswith(b"PK\x03\x04"):
        return "epub"
    for encoding in ("utf-8", "utf-16"):
        sample = head.decode(encoding, errors="ignore").lstrip("\ufeff \t\r\n").lower()
        # Markup must open the file: a story that mentions "<html" in its text is still text.
        if sample.startswith(("<!doctype html", "<html")) or (sample.startswith("<") and "<html" in sample):
            return "html"
    return "text"


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_file(path: Path) -> None:
    """Refuse what is not a regular file, saying what it is. ``Path.exists()`` would answer False for a symlink
    loop and raise for a folder we may not search, so stat it and read the error."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise InputError(f"{path}: is a symbolic link to {target}, which does not exist; fix the link") from None
        raise InputError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{path}: is a symbolic link that loops back on itself (too many levels of links); "
                "point it at the book file"
            ) from None
        if isinstance(exc, PermissionError):
            raise InputError(
                f"{path}: cannot be reached (permission denied on a folder in its path); check the permissions"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise InputError(f"{path}: no such file (a part of the path is a file, not a folder)") from None
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not a book file; name the file itself")
    if not stat.S_ISREG(info.st_mode):
        # Never opened: a FIFO would block until something writes to it.
        kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "a special file")
        raise InputError(f"{path}: is {kind}, not a regular file; give a .txt, .md, .epub or .html book")


def _read(path: Path, include_matter: bool) -> Book:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        kind = "text"
    elif suffix in MARKDOWN_SUFFIXES:
        kind = "markdown"
    elif suffix in EPUB_SUFFIXES:
        kind = "epub"
    elif suffix in HTML_SUFFIXES:
        kind = "html"
    else:
        kind = _sniff(path)
    # Readers are imported when needed: each pulls in its own parsing libraries.
    if kind == "epub":
        from pipeline.readers.epub import read_epub

        return read_epub(path, include_matter=include_matter)
    if kind == "html":
        from pipeline.readers.html import read_html

        return read_html(path)
    if kind == "markdown":
        from pipeline.readers.markdown import read_markdown

        return read_markdown(path)
    from pipeline.readers.text import read_text

    return read_text(path, include_matter=include_matter)


def read_book(path: Path, *, include_matter: bool = False, language: str | None = None) -> Book:
    """Read any supported book. Chapters with nothing in them are dropped and the rest renumbered; the
    language is ``language`` when given, else the book's own, else a guess from its text.
    Raises InputError (one line, naming the file) when the book is missing, unreadable, empty or in a format
    we cannot read (PDF, Word, MOBI ...)."""
    path = Path(path)
    check_file(path)
    _refuse_unsupported(path)
    try:
        book = _read(path, include_matter)
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read (permission denied); check its permissions") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    chapters = tuple(c for c in book.chapters if any(p.strip() for p in c.paragraphs))
    if not any(ch.isalnum() for c in chapters for p in c.paragraphs for ch in p):
        raise InputError(f"{path}: holds no text to read aloud; check that it is the right file")
    chapters = tuple(c if c.index == i else dataclasses.replace(c, index=i) for i, c in enumerate(chapters, start=1))
    if language:
        lang: str | None = language
    elif book.language:
        lang = book.language
    else:
        lang = detect_language("\n".join(p for c in chapters[:20] for p in c.paragraphs[:50]))
    return dataclasses.replace(book, chapters=chapters, language=lang, source=book.source or path)
