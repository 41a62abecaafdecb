"""A chapter MP3's ID3 tags (v2.3, what most players read best), cover included, and the book's tags as the
M4B carries them. Named as Audiobookshelf reads them (server/utils/prober.js, AudioFileScanner.js; ffprobe's
names, matched without case): album = book, artist and album artist = author, composer = narrator, genre =
the book's subjects joined with ";" (which it splits on), comment = description, "series" / "series-part",
"isbn", "asin", "language", publisher and date."""

from __future__ import annotations

from pathlib import Path

from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    TALB,
    TCOM,
    TCON,
    TIT1,
    TIT2,
    TLAN,
    TPE1,
    TPE2,
    TPUB,
    TRCK,
    TXXX,
    TYER,
    Encoding,
)

from pipeline.bookmeta import genres, narrator
from pipeline.errors import AudioError
from pipeline.models import Book, Chapter
from pipeline.names import is_article
from pipeline.options import BookOptions
from pipeline.textfacts import iso639_2


def cover_mime(book: Book) -> str:
    """The cover's type by its bytes (a caller may have set a picture without its type), else as given."""
    if book.cover and book.cover.startswith(b"\x89PNG"):
        return "image/png"
    if book.cover and book.cover.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return book.cover_mime or "image/jpeg"


def book_tags(book: Book, settings: BookOptions) -> dict[str, str]:
    """The book's tags by the names ffprobe gives them (and Audiobookshelf reads), empty ones left out."""
    info = book.info
    tags = {
        "album": book.title,
        "artist": book.author or "",
        "album_artist": book.author or "",
        "composer": narrator(settings),
        "genre": ";".join(g.replace(";", ",") for g in genres(book, settings)),
        "comment": info.description or "",
        "date": info.date or "",
        "publisher": info.publisher or "",
        "series": info.series or "",
        "series-part": info.series_index or "" if info.series else "",
        "isbn": info.isbn or "",
        "asin": info.asin or "",
        "language": settings.language or book.language or "",
    }
    return {k: v for k, v in tags.items() if v}


def tag_mp3(path: Path, book: Book, chapter: Chapter, title: str, track: str, settings: BookOptions) -> None:
    tags = ID3()
    utf16 = Encoding.UTF16  # ID3v2.3 knows only Latin-1 and UTF-16; v2.3 is what most players read best
    known = book_tags(book, settings)
    tags.add(TIT2(encoding=utf16, text=[title]))
    if chapter.part:  # the volume or part above the chapter: ID3's content group, which players show as grouping
        tags.add(TIT1(encoding=utf16, text=[" ".join(chapter.part.split())]))
    # An article's album is its site ("n/N": an article is a book of one chapter).
    article = is_article(book, int(track.rpartition("/")[2] or 0)) and book.info.site
    tags.add(TALB(encoding=utf16, text=[book.info.site if article else book.title]))
    if book.author:
        tags.add(TPE1(encoding=utf16, text=[book.author]))
        tags.add(TPE2(encoding=utf16, text=[book.author]))
    tags.add(TCOM(encoding=utf16, text=[known["composer"]]))
    tags.add(TRCK(encoding=utf16, text=[track]))
    if "genre" in known:
        tags.add(TCON(encoding=utf16, text=[known["genre"]]))
    language = iso639_2(settings.language or book.language)
    if language:
        tags.add(TLAN(encoding=utf16, text=[language]))
    if "comment" in known:
        tags.add(COMM(encoding=utf16, lang=language or "und", desc="", text=[known["comment"]]))
    if "publisher" in known:
        tags.add(TPUB(encoding=utf16, text=[known["publisher"]]))
    year = (book.info.date or "")[:4]
    if year.isdigit():
        tags.add(TYER(encoding=utf16, text=[year]))
    for name in ("series", "series-part", "isbn", "asin"):  # no ID3 frame of their own: user text frames
        if name in known:
            tags.add(TXXX(encoding=utf16, desc=name, text=[known[name]]))
    if book.cover:
        tags.add(APIC(encoding=utf16, mime=cover_mime(book), type=3, desc="Cover", data=book.cover))
    try:
        tags.save(str(path), v2_version=3)
    except Exception as exc:  # mutagen raises its own MutagenError, OSError, struct.error ...
        raise AudioError(f"cannot write tags to {path}: {exc}") from exc
