"""The output folder: made ready before a run, and tidied when a book is complete (playlist, M4B, and
nothing left over from an earlier run that no longer matches the book)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import assembly
from pipeline.bookfiles import write_book_files
from pipeline.errors import UsageError
from pipeline.models import Book, ChapterAudio
from pipeline.names import CHAPTER_FOLDERS, IGNORE_MARK, book_stem, chapter_folder
from pipeline.options import BookOptions
from pipeline.report import ChapterOutcome, PreviousRun


def prepare_output(out_dir: Path) -> None:
    """Fail now, before a request is paid for, when the folder cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output path {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".audiobook-write-test.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") from None


def clean_partial_files(out_dir: Path) -> None:
    """A killed run may leave ``*.part`` files; they never count as output."""
    for folder in [out_dir, *(out_dir / f for f in CHAPTER_FOLDERS.values() if f)]:
        if folder.is_dir():
            for p in folder.glob("*.part"):
                p.unlink(missing_ok=True)


@dataclass(frozen=True)
class Finished:
    """What a complete book gets besides its chapter files."""

    playlist: str
    m4b: str | None = None
    m4b_fingerprint: str | None = None
    book_files: tuple[str, ...] = ()  # cover.jpg, metadata.json, ... (``bookfiles``)


@dataclass(frozen=True)
class FinishJob:
    """What a complete book gets besides its chapters, as a plain value (a unit of work an executor runs)."""

    book: Book  # its tags and cover; its chapters' text is not needed
    options: BookOptions
    out_dir: Path
    previous: PreviousRun  # what the last run wrote, to tidy
    chapters: tuple[ChapterAudio, ...]
    outcomes: tuple[ChapterOutcome, ...]


def finish_book(job: FinishJob, note: Callable[[str], None]) -> Finished:
    """Write the playlist, build the M4B when asked (unless the one from an earlier run is still current),
    then remove what an earlier run wrote that no longer belongs. Only for a complete book: a partial one must
    not look finished. ``note`` tells the user about the slow steps."""
    fmt = job.options.output_format
    folder = chapter_folder(fmt)
    # The playlist sits with the chapter files it lists (a player given the folder finds both).
    playlist_path = assembly.write_playlist(job.out_dir / folder, job.book, job.chapters)
    playlist = f"{folder}/{playlist_path.name}" if folder else playlist_path.name
    if fmt == "both":  # Audiobookshelf skips a folder holding ".ignore": the M4B alone is the book
        (job.out_dir / folder / IGNORE_MARK).touch()
    m4b = m4b_fingerprint = None
    if job.options.builds_m4b:
        m4b_fingerprint = _m4b_fingerprint(job.options, job.outcomes)
        m4b = book_stem(job.book) + ".m4b"
        previous = job.previous
        current = previous.m4b == m4b and previous.m4b_fingerprint == m4b_fingerprint
        if not (current and (job.out_dir / m4b).is_file()):
            note(f"building {m4b} …")
            built = assembly.build_m4b(job.out_dir, job.book, job.chapters, job.options)
            note(f"wrote {built.name}")
    keep = {c.file for c in job.outcomes} | {playlist, m4b}
    if job.options.subtitles:
        keep |= {str(Path(c.file).with_suffix("." + job.options.subtitles)) for c in job.outcomes}
    _remove_stale(job, {k for k in keep if k}, {c.file for c in job.outcomes})
    for other in {f for f in CHAPTER_FOLDERS.values() if f} - {folder}:
        _remove_if_empty(job.out_dir / other)
    book_files = write_book_files(job.out_dir, job.book, job.options)
    return Finished(playlist, m4b, m4b_fingerprint, book_files)


def _remove_if_empty(folder: Path) -> None:
    """A chapter folder an earlier run used, once its chapters have gone: with only our ".ignore" left."""
    with contextlib.suppress(OSError):  # gone already, or something of the user's is in it: left alone
        if {p.name for p in folder.iterdir()} <= {IGNORE_MARK}:
            (folder / IGNORE_MARK).unlink(missing_ok=True)
            folder.rmdir()


def _m4b_fingerprint(options: BookOptions, chapters: Sequence[ChapterOutcome]) -> str:
    data = [[c.file, c.fingerprint] for c in chapters] + [options.genre, options.sample_rate]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()  # chapter fingerprints cover tags and cover


def _remove_stale(job: FinishJob, keep: set[str], current_chapters: set[str]) -> None:
    """Delete what an earlier run of this book wrote that no longer matches it: chapters that are gone (the book
    changed), subtitles in a format no longer asked for, an old playlist or M4B. Only names this program wrote
    (listed in the previous report, or a current chapter's subtitle siblings) are ever touched."""
    previous = job.previous
    names = current_chapters | previous.files | {n for n in (previous.playlist, previous.m4b) if n}
    candidates: set[str] = set()
    for name in names:
        # Only names directly in the book folder or in one of its chapter folders (a report can be edited).
        folder, _, base = name.rpartition("/")
        if folder not in CHAPTER_FOLDERS.values() or not base or "\\" in base or base.startswith("."):
            continue
        candidates.add(name)
        if name.endswith(".mp3"):
            candidates |= {name[:-4] + ".srt", name[:-4] + ".vtt"}
    for name in candidates - keep:
        (job.out_dir / name).unlink(missing_ok=True)
