"""One reader per format, and ``read_book`` to pick the right one: path -> ``Book``."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book
from pipeline.readers.sniff import BINARY_KINDS, content_kind
from pipeline.textfacts import detect_language

log = logging.getLogger("audiobook")

TEXT_SUFFIXES = frozenset({".txt", ".text"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
EPUB_SUFFIXES = frozenset({".epub"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
PDF_SUFFIXES = frozenset({".pdf"})
DOCX_SUFFIXES = frozenset({".docx"})
FB2_SUFFIXES = frozenset({".fb2"})  # and ".fb2.zip": see _suffix_kind
MOBI_SUFFIXES = frozenset({".mobi", ".azw", ".azw3", ".prc"})
# Every suffix a reader is chosen by: what `batch FOLDER` and a job file's globs take for a book.
BOOK_SUFFIXES = (
    TEXT_SUFFIXES | MARKDOWN_SUFFIXES | EPUB_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | DOCX_SUFFIXES | FB2_SUFFIXES
) | MOBI_SUFFIXES

# Formats people try that we cannot read: refused by name rather than misread.
UNSUPPORTED_SUFFIXES = {
    ".doc": "DOC",
    ".odt": "ODT",
    ".rtf": "RTF",
    ".djvu": "DjVu",
    ".pages": "Pages",
}
_SUPPORTED = "supported: .txt .md .html .epub .pdf .docx .fb2 .mobi .azw3"
_NAMES = {"pdf": "PDF", "epub": "EPUB", "docx": "DOCX", "fb2": "FB2", "mobi": "MOBI", "html": "HTML", "text": "text"}


def is_book_name(path: Path) -> bool:
    """Whether a file's name makes it a book for `batch FOLDER` and a job file's globs."""
    return path.suffix.lower() in BOOK_SUFFIXES or path.name.lower().endswith(".fb2.zip")


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "AEFHILMNORSX" else f"a {name}"


def _suffix_kind(path: Path) -> str | None:
    """The reader a file's name asks for, if any."""
    name = path.name.lower()
    if name.endswith(".fb2.zip"):
        return "fb2"
    suffix = path.suffix.lower()
    for suffixes, kind in (
        (TEXT_SUFFIXES, "text"),
        (MARKDOWN_SUFFIXES, "markdown"),
        (EPUB_SUFFIXES, "epub"),
        (HTML_SUFFIXES, "html"),
        (PDF_SUFFIXES, "pdf"),
        (DOCX_SUFFIXES, "docx"),
        (FB2_SUFFIXES, "fb2"),
        (MOBI_SUFFIXES, "mobi"),
    ):
        if suffix in suffixes:
            return kind
    return None


def _unsupported(path: Path, fmt: str, note: str = "") -> InputError:
    return InputError(f"{path}: {fmt} is not supported{note}; convert it to EPUB, PDF or text first ({_SUPPORTED})")


def _refusal(path: Path, found: str, named: bool) -> InputError:
    """The one line for content we do not read ("!RTF", "!zip", "!xml:svg", ...; see ``sniff.content_kind``)."""
    fmt = found[1:]
    despite = " despite its name" if named else ""
    if fmt == "zip":
        return InputError(f"{path}: the file is a zip archive but no e-book (neither EPUB, DOCX nor FB2){despite}")
    if fmt.startswith("xml:"):
        return InputError(
            f"{path}: the file is an XML document (root <{fmt[4:]}>){despite}, not a book we read; its markup "
            f"would be read aloud ({_SUPPORTED})"
        )
    extra = ": an old Word file, or a password-protected DOCX" if fmt == "DOC" else ""
    return _unsupported(path, fmt, f" (the file is {_a(fmt)}{despite}{extra})")


def choose_reader(path: Path) -> str:
    """The reader for ``path``. Its content decides where it is a binary or XML e-book, or a format we do not
    read (refused by name, in one line); otherwise its suffix, else text or HTML as the content says."""
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        raise _unsupported(path, UNSUPPORTED_SUFFIXES[suffix])
    named = _suffix_kind(path)
    found = content_kind(path, zip_as=named if named in ("epub", "docx", "fb2") else None)
    if found.startswith("!"):
        raise _refusal(path, found, named is not None)
    if named is None:
        return found
    if found in BINARY_KINDS and found != named:
        log.warning(
            "%s: the file is %s despite its name; reading it as %s", path.name, _a(_NAMES[found]), _NAMES[found]
        )
        return found
    if named in BINARY_KINDS and found in ("text", "html"):
        raise InputError(f"{path}: the file is {_NAMES[found]}, not {_a(_NAMES[named])}; rename it to what it is")
    return named


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
        raise InputError(f"{path}: is {kind}, not a regular file; give a book file ({_SUPPORTED})")


def _read(path: Path, include_matter: bool) -> Book:
    kind = choose_reader(path)
    # Readers are imported when needed: each pulls in its own parsing libraries.
    if kind == "epub":
        from pipeline.readers.epub import read_epub

        return read_epub(path, include_matter=include_matter)
    if kind == "pdf":
        from pipeline.readers.pdf import read_pdf

        return read_pdf(path, include_matter=include_matter)
    if kind == "docx":
        from pipeline.readers.docx import read_docx

        return read_docx(path, include_matter=include_matter)
    if kind == "fb2":
        from pipeline.readers.fb2 import read_fb2

        return read_fb2(path)
    if kind == "mobi":
        from pipeline.readers.mobi import read_mobi

        return read_mobi(path, include_matter=include_matter)
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
