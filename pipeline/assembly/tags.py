"""A chapter MP3's ID3 tags (v2.3, what most players read best), cover included."""

from __future__ import annotations

from pathlib import Path

from mutagen.id3 import APIC, ID3, TALB, TCON, TIT1, TIT2, TLAN, TPE1, TPE2, TRCK, Encoding

from pipeline.errors import AudioError
from pipeline.models import Book, Chapter
from pipeline.names import is_article
from pipeline.options import BookOptions
from pipeline.textfacts import iso639_2


def cover_mime(book: Book) -> str:
    if book.cover_mime:
        return book.cover_mime
    if book.cover and book.cover.startswith(b"\x89PNG"):
        return "image/png"
    return "image/jpeg"


def tag_mp3(path: Path, book: Book, chapter: Chapter, title: str, track: str, settings: BookOptions) -> None:
    tags = ID3()
    utf16 = Encoding.UTF16  # ID3v2.3 knows only Latin-1 and UTF-16; v2.3 is what most players read best
    tags.add(TIT2(encoding=utf16, text=[title]))
    if chapter.part:  # the volume or part above the chapter: ID3's content group, which players show as grouping
        tags.add(TIT1(encoding=utf16, text=[" ".join(chapter.part.split())]))
    # An article's album is its site ("n/N": an article is a book of one chapter).
    article = is_article(book, int(track.rpartition("/")[2] or 0)) and book.info.site
    tags.add(TALB(encoding=utf16, text=[book.info.site if article else book.title]))
    if book.author:
        tags.add(TPE1(encoding=utf16, text=[book.author]))
        tags.add(TPE2(encoding=utf16, text=[book.author]))
    tags.add(TRCK(encoding=utf16, text=[track]))
    if settings.genre:
        tags.add(TCON(encoding=utf16, text=[settings.genre]))
    language = iso639_2(settings.language or book.language)
    if language:
        tags.add(TLAN(encoding=utf16, text=[language]))
    if book.cover:
        tags.add(APIC(encoding=utf16, mime=cover_mime(book), type=3, desc="Cover", data=book.cover))
    try:
        tags.save(str(path), v2_version=3)
    except Exception as exc:  # mutagen raises its own MutagenError, OSError, struct.error ...
        raise AudioError(f"cannot write tags to {path}: {exc}") from exc
