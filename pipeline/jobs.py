"""The units of work after the parts: a chapter to assemble and a book to finish (``outputs.FinishJob``), as
plain values, with what doing them gives back. Whichever executor runs them (this process, or a worker on
another machine) runs these functions; all they need travels in the value, nothing in the memory of the
process that made it."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import assembly
from pipeline.errors import AudioError, ToolError
from pipeline.models import Book, Chapter, ChapterAudio, Segment
from pipeline.options import BookOptions
from pipeline.outputs import Finished, FinishJob, finish_book
from pipeline.store import Stores

log = logging.getLogger("audiobook")


@dataclass(frozen=True)
class ChapterJob:
    book: Book  # its tags (title, author, language, cover); its chapters are not needed and not sent
    chapter: Chapter  # index, title and part (paragraphs not sent)
    segments: tuple[Segment, ...]
    keys: tuple[str, ...]  # the part of each segment, in the store at ``store``
    store: str
    out_dir: Path
    options: BookOptions
    total_chapters: int


@dataclass(frozen=True)
class ChapterDone:
    audio: ChapterAudio | None  # the written chapter, or None when it could not be
    error: str | None = None
    rerun_helps: bool = True  # False for a full or vanished output folder: the same command meets it again


@dataclass(frozen=True)
class FinishDone:
    finished: Finished | None
    error: str | None = None


def light(book: Book) -> Book:
    """The book as jobs carry it: metadata and cover, no chapter text."""
    return dataclasses.replace(book, chapters=())


def assemble(job: ChapterJob, stores: Stores) -> ChapterDone:
    """Write the chapter file from its stored parts. A part found damaged is dropped from the store, so the
    next run asks for it again; an error is returned, not raised, so it can travel back from a worker."""
    store = stores.at(job.store)
    fmt = job.options.part_format
    chapter = job.chapter
    try:
        written = assembly.assemble_chapter(
            job.book,
            chapter,
            job.segments,
            [functools.partial(store.get, key, fmt) for key in job.keys],
            job.out_dir,
            job.options,
            total_chapters=job.total_chapters,
        )
    except OSError as exc:  # the output folder is full or was removed under us
        return ChapterDone(None, f"cannot write chapter {chapter.index}: {exc.strerror or exc}", rerun_helps=False)
    except AudioError as exc:
        note = ""
        if isinstance(exc, assembly.PartDecodeError):
            # A damaged part must not be a hit forever: drop it so the next run asks again.
            store.evict(job.keys[exc.segment], fmt)
            note = "; the damaged part was dropped from the cache, run again to fetch it"
        # A local tool's failure meets the same command again: something on this machine must change first.
        return ChapterDone(None, f"{exc}{note}", rerun_helps=not isinstance(exc, ToolError))
    return ChapterDone(written)


def finish(job: FinishJob, note: Callable[[str], None]) -> FinishDone:
    try:
        return FinishDone(finish_book(job, note))
    except AudioError as exc:
        return FinishDone(None, str(exc))
