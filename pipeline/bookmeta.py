"""A book's metadata as it is published: what its reader found, overridden by the job file and flags, with a
JPEG cover always (the book's own, converted, or one made from its title). Applied once, after reading, so
every stage (tags, M4B, the library files) sees the same values."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pipeline import covers
from pipeline.errors import UsageError
from pipeline.models import Book
from pipeline.options import BookOptions

log = logging.getLogger("audiobook")

MAX_COVER_FILE = 20 * 1024 * 1024


def narrator(options: BookOptions) -> str:
    """Who reads the book: as told (or as the plan set it, ``default_narrator``), else the voice and model."""
    return options.narrator or default_narrator("openai", options)


def default_narrator(backend: str, options: BookOptions) -> str:
    """The voice that reads: "alloy (gpt-4o-mini-tts)" for a speech API, "eSpeak NG" for the offline voice
    (which reads every book with the voice of its language, whatever the voice setting)."""
    if backend == "espeak":
        return "eSpeak NG"
    return f"{options.voice} ({options.model})" if options.model else options.voice


def genres(book: Book, options: BookOptions) -> tuple[str, ...]:
    """The book's subjects, else the configured genre ("Audiobook")."""
    return book.info.subjects or ((options.genre,) if options.genre else ())


def complete(book: Book, options: BookOptions) -> Book:
    """``book`` with the options' metadata over its own and a JPEG cover (never None afterwards)."""
    info = book.info
    changes: dict[str, object] = {}
    for name in ("description", "publisher", "date", "series", "series_index", "isbn", "asin"):
        value = getattr(options, name)
        if value is not None and value.strip():
            changes[name] = value.strip()
    if options.subjects is not None:
        changes["subjects"] = tuple(s.strip() for s in options.subjects.split(";") if s.strip())
    if changes:
        info = dataclasses.replace(info, **changes)  # type: ignore[arg-type]
    title = options.title.strip() if options.title and options.title.strip() else book.title
    author = options.author.strip() if options.author and options.author.strip() else book.author
    cover, mime = book.cover, book.cover_mime
    jpeg = _read_cover_file(options.cover) if options.cover is not None else None
    if jpeg is None and cover:
        try:
            jpeg = covers.to_jpeg(cover, mime)
        except covers.CoverError as exc:
            log.warning("%s: its cover is left out (%s); a plain one is made instead", title, exc)
    if jpeg is None:
        jpeg = covers.make_cover(title, author)
    return dataclasses.replace(book, title=title, author=author, cover=jpeg, cover_mime=covers.JPEG_MIME, info=info)


def _read_cover_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_COVER_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read cover {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_COVER_FILE:
        raise UsageError(f"cover {path} is larger than 20 MB")
    try:
        return covers.to_jpeg(data)
    except covers.CoverError as exc:
        raise UsageError(f"cover {path} cannot be used: {exc}") from None
