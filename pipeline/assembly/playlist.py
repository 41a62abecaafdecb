"""A book's playlist: extended M3U, UTF-8, the chapter files by relative name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.files import atomic_write
from pipeline.models import Book, ChapterAudio
from pipeline.names import book_stem


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_playlist(out_dir: Path, book: Book, chapters: Sequence[ChapterAudio]) -> Path:
    """``<book title>.m3u``: extended M3U, UTF-8, chapter files by relative name, in the order given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["#EXTM3U", f"#PLAYLIST:{' '.join(book.title.split())}"]
    for ch in chapters:
        title = " ".join(ch.chapter.title.split()) or f"Chapter {ch.chapter.index}"
        lines.append(f"#EXTINF:{round(ch.duration_ms / 1000)},{title}")
        lines.append(_rel(ch.path, out_dir))
    path = out_dir / f"{book_stem(book)}.m3u"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
