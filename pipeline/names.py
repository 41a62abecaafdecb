"""File names the tool writes: a chapter's ``"01 Title.mp3"`` and a book's stem for its playlist and M4B.

Planning names chapters before any audio exists, and the output folder is tidied by them, so the rules live
here, apart from the assembly stage that writes the files: reaching a name loads no audio code.
"""

from __future__ import annotations

import re
import unicodedata

from pipeline.models import Book

_TITLE_MAX_CHARS = 80
# 255 bytes is the per-name limit of ext4 and most others; keep room for the ".part" of the temporary name.
_NAME_MAX_BYTES = 250
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
# Windows forbids these in names; map the common ones to look-alikes a reader still understands.
_REPLACE = str.maketrans({":": " - ", "/": "-", "\\": "-", "|": "-", '"': "'", "<": "", ">": "", "?": "", "*": ""})
# Bidirectional overrides can make "evil\u202egpm.exe" display as "evilexe.mp3": never keep them.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean_text(text: str) -> str:
    """One line of text that is safe inside a file name (Windows rules, which are the strictest)."""
    chars = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _BIDI:
            continue
        category = unicodedata.category(ch)
        if category in ("Zl", "Zp") or ch.isspace():
            chars.append(" ")
        elif category != "Cc":  # control characters, NUL included
            chars.append(ch)
    cleaned = " ".join("".join(chars).translate(_REPLACE).split())
    return re.sub(r"\.{2,}", "…", cleaned)  # no ".." anywhere: it means "parent" to too many tools


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _safe_stem(stem: str) -> str:
    """No leading dot (hidden file), no trailing dot or space (Windows drops them), no device name."""
    stem = stem.lstrip(" .").rstrip(" .")
    device, dot, rest = stem.partition(".")
    if device.rstrip(" ").upper() in _RESERVED:  # "aux.txt" is as reserved as "AUX" on Windows
        stem = f"{device.rstrip(' ')}_{dot}{rest}"
    return stem


def chapter_filename(index: int, total: int, title: str, ext: str = "mp3") -> str:
    """``"01 Down the Rabbit-Hole.mp3"``: numbered so the files sort, titled so a listener can find one."""
    if not ext.isalnum():
        raise ValueError(f"bad extension {ext!r}")
    width = max(2, len(str(max(total, index))))
    prefix, suffix = f"{index:0{width}d} ", f".{ext}"
    text = _clean_text(title)[:_TITLE_MAX_CHARS].rstrip(" .")
    text = _truncate_utf8(text, _NAME_MAX_BYTES - len(prefix) - len(suffix)).rstrip(" .")
    if all(unicodedata.category(ch)[0] in "PZ" for ch in text):  # "", "…", "- -": nothing to recognise
        text = f"Chapter {index}"
    return _safe_stem(prefix + text) + suffix


def is_article(book: Book, chapters: int | None = None) -> bool:
    """A web article (its reader named a site or a URL) of one chapter: one file, named after its title.
    ``chapters``: the book's count, where the book travels without its chapters (a job's)."""
    count = len(book.chapters) if chapters is None else chapters
    return count == 1 and bool(book.info.site or book.info.url)


def chapter_file(book: Book, index: int, total: int, title: str, ext: str = "mp3") -> str:
    """The chapter's file name in ``book``: ``chapter_filename``, or for an article ``"Its Title.mp3"``."""
    if not is_article(book, total):
        return chapter_filename(index, total, title, ext)
    text = _truncate_utf8(_clean_text(title)[: _TITLE_MAX_CHARS * 2], _NAME_MAX_BYTES - len(ext) - 1).rstrip(" .")
    return _safe_stem(text if any(c.isalnum() for c in text) else book_stem(book)) + f".{ext}"


# Where a book's chapter MP3s go, by output format. Audiobookshelf takes every audio file of a folder as one
# book and a subfolder as another book (unless named like a disc, "CD1"); it skips dot-folders and folders
# holding a file named ".ignore" (server/utils/fileUtils.js: shouldIgnoreFile, recurseFiles). So beside an M4B,
# the chapter MP3s sit where a scan does not find them: hidden with "m4b", in a visible "MP3" folder marked
# with ".ignore" with "both".
CHAPTER_FOLDERS = {"mp3": "", "m4b": ".chapters", "both": "MP3"}
IGNORE_MARK = ".ignore"


def chapter_folder(output_format: str) -> str:
    """The chapter files' folder inside the book folder ("" for the book folder itself)."""
    return CHAPTER_FOLDERS[output_format]


def chapter_path(book: Book, index: int, total: int, title: str, output_format: str = "mp3") -> str:
    """The chapter file's name relative to the book folder, as reports list it: ``"MP3/01 Title.mp3"``."""
    name = chapter_file(book, index, total, title)
    folder = chapter_folder(output_format)
    return f"{folder}/{name}" if folder else name


def safe_folder_name(text: str, fallback: str) -> str:
    """One path component from a title or an author's name: never "", ".", "..", a hidden or reserved name,
    nor anything holding a separator, so a book's own metadata cannot place files outside the library."""
    cleaned = _safe_stem(_truncate_utf8(_clean_text(text)[:120], 200))
    return cleaned or fallback


def book_stem(book: Book) -> str:
    """The sanitized book title used for the playlist and the M4B (``"Audiobook"`` when nothing is left)."""
    text = _clean_text(book.title)[:150]
    return _safe_stem(_truncate_utf8(text, 200)) or "Audiobook"
