"""What the plain-text and Markdown readers share: loading a file, a title from its name, what a reader
found besides chapters, inline clean-up, and building the ``Book``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.textfacts import decode_bytes, normalize_paragraph


def load_text(path: Path) -> str:
    """The decoded text of ``path`` with LF line ends; InputError when it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file; check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, not a book file; name the file itself") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc
    return decode_bytes(data, str(path))


def pretty_stem(path: Path) -> str:
    """A title from a file name: "alice-pg11.txt" -> "Alice", "war_and_peace" -> "War And Peace"."""
    words = [w for w in re.split(r"[\s_\-.]+", path.stem) if w and not re.fullmatch(r"pg\d+", w, re.I)]
    if not words:
        return path.stem or "Untitled"
    if all(w.islower() or not w.isalpha() for w in words):
        words = [w[:1].upper() + w[1:] for w in words]
    return " ".join(words)


@dataclass
class Parsed:
    """Metadata and left-out parts a reader found besides the chapters."""

    title: str | None = None
    author: str | None = None
    skipped: list[str] = field(default_factory=list)
    description: str | None = None


_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")
_FOOTNOTE = re.compile(  # with the space before it, so "word [1]." becomes "word."
    "\\s*(?:[\u2460-\u249b\u24eb-\u24f4\u2776-\u2793]"  # ① ⑴ ⒈ ⓫ ❶ ➀ and their runs
    r"|\[\d{1,3}\]|［[0-9０-９]{1,3}］|〔[0-9０-９]{1,3}〕|【[0-9０-９]{1,3}】|\[(?:注|註)\s*\d{1,3}\])"
)


def clean_inline(text: str, *, markdown: bool = False) -> str:
    """Remove emphasis markers and footnote marks, then normalize."""
    if "*" in text or "_" in text:
        text = _EMPHASIS.sub(r"\2", text)
        text = _EMPHASIS.sub(r"\2", text)  # nested: _*word*_
    if markdown:
        text = _INNER_UNDERSCORE.sub(" ", text)  # snake_case reads as two words
    # Underscores are italics in Gutenberg texts, also inside words ("_Un_important"); never spoken.
    text = text.replace("_", "")
    text = _FOOTNOTE.sub("", text)
    return normalize_paragraph(text)


def speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def make_book(
    title: str,
    pairs: list[tuple[str, list[str]]],
    parsed: Parsed,
    source: Path | None,
    parts: Sequence[str | None] | None = None,
) -> Book:
    """The book from (title, paragraphs) pairs, numbered, leaving out chapters with nothing to read. ``parts``,
    when given, names the volume or part of each pair."""
    named = parts if parts is not None else [None] * len(pairs)
    kept = [(name, paragraphs, part) for (name, paragraphs), part in zip(pairs, named, strict=True) if paragraphs]
    chapters = tuple(
        Chapter(index=i, title=t, paragraphs=tuple(p), part=part) for i, (t, p, part) in enumerate(kept, start=1)
    )
    info = BookInfo(description=parsed.description)
    return Book(title, chapters, author=parsed.author, source=source, skipped=tuple(parsed.skipped), info=info)
