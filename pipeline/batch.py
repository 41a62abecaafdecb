"""Batch job files, and the summary a batch run leaves. ``app.run_batch`` runs them.

A job file is TOML:

    settings = "default.toml"     # optional base config, relative to the job file
    output = "audiobooks"         # root folder; each book goes to <output>/<book file stem>/
    max_cost = 20.0               # optional budget in USD (estimated); --max-cost overrides
    concurrency = 8               # the run's own settings, shared by every book: set here, never per book
    feed_base_url = "https://example.org/audiobooks/"  # optional: <output>/feed.xml, a podcast feed, at the end

    [defaults]                    # settings for every book (any per-book key of configs/default.toml)
    voice = "alloy"

    [[book]]
    path = "library/*.epub"       # a path or a glob, relative to the job file
    voice = "nova"                # per-book overrides: any per-book setting, plus output and format
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import RUN_KEYS, Settings
from pipeline.errors import UsageError
from pipeline.feed import check_base_url
from pipeline.fetch import folder_name
from pipeline.fetch import is_url as is_web_url
from pipeline.files import atomic_write
from pipeline.readers import BOOK_SUFFIXES, is_book_name  # the readers own which files are books
from pipeline.store import is_url

log = logging.getLogger("audiobook")

_JOB_KEYS = {"settings", "output", "max_cost", "defaults", "book", "library", "abs_url", "feed_base_url"}
_JOB_KEYS |= RUN_KEYS
_BOOK_KEYS = {"path", "output", "format"}
OUTPUT_LOCK = ".audiobook-batch.lock"  # in the output folder: one run writes there at a time, whatever its job


@dataclass(frozen=True)
class BookJob:
    source: Path
    out_dir: Path
    overrides: dict[str, Any]
    fixed: bool = False  # the job file names this folder for this one book (output = ... on a single file)
    url: str | None = None  # a book given as a URL: fetched into out_dir (``source`` is then only its name)

    @property
    def label(self) -> str:
        return self.url or str(self.source)


@dataclass(frozen=True)
class JobFile:
    path: Path  # the job file, or the folder of books a folder job converts
    lock: Path  # one run at a time per job: the OS releases it when a run dies
    base_config: Path | None
    output: Path
    max_cost: float | None
    run: dict[str, Any]  # run-level settings the job file sets (concurrency)
    books: tuple[BookJob, ...]
    missing: tuple[str, ...]  # patterns that matched nothing
    # Where finished books are placed (Author/[Series/]Title/, see pipeline.library); ``output`` is then where
    # they are made. ``abs_url``: an Audiobookshelf server asked to scan it afterwards.
    library: Path | None = None
    abs_url: str | None = None
    feed_base_url: str | None = None  # write <output>/feed.xml at the end, the folder served at this URL


class BatchStatus(StrEnum):
    DONE = "done"
    UNCHANGED = "unchanged"  # every chapter was current: nothing sent, nothing written
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    UNVERIFIED = "unverified"  # written, with parts verification left suspect (named in its report)
    OVER_BUDGET = "over budget"
    NOT_STARTED = "not started"
    PLANNED = "planned"  # a dry run
    NO_MATCH = "no match"  # a glob that matched nothing: a quiet night, not a failure

    @property
    def ok(self) -> bool:
        return self in (BatchStatus.DONE, BatchStatus.UNCHANGED, BatchStatus.PLANNED, BatchStatus.NO_MATCH)


@dataclass(frozen=True)
class BookSummary:
    source: str
    output: str
    status: BatchStatus
    chapters: int = 0
    duration_s: float = 0.0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    characters_to_send: int = 0
    estimated_cost_usd: float = 0.0
    error: str | None = None
    verified: int = 0  # parts verification judged
    remade: int = 0  # fresh requests for suspect parts
    unverified: int = 0  # parts left suspect after their tries (named in the book's report)


class _Lines:
    """Where a key sits in the job file's text, so an error can name the line (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([\w.-]+)\s*\]\]?")
    _KEY = re.compile(r"^\s*([\w-]+)\s*=")

    def __init__(self, path: Path, text: str):
        self.path = path
        self._tables: list[tuple[str, int, dict[str, int]]] = [("", 1, {})]  # (table, its line, key -> line)
        for number, line in enumerate(text.splitlines(), 1):
            if header := self._HEADER.match(line):
                self._tables.append((header.group(1), number, {}))
            elif key := self._KEY.match(line):
                self._tables[-1][2].setdefault(key.group(1), number)

    def at(self, key: str | None, table: str = "", index: int = 1) -> str:
        """``jobs.toml:12`` for ``key`` in the ``index``-th table named ``table`` (the top level by default)."""
        found = [t for t in self._tables if t[0] == table]
        if len(found) < index:
            return str(self.path)
        _, line, keys = found[index - 1]
        return f"{self.path}:{keys.get(key, line) if key else line}"


def load_jobs(path: Path) -> JobFile:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise UsageError(f"job file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read job file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"job file {path} is not valid TOML: {exc}") from None
    lines = _Lines(path, text)
    unknown = sorted(set(data) - _JOB_KEYS)
    if unknown:
        raise UsageError(f"{lines.at(unknown[0])}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_JOB_KEYS))})")
    base = path.parent
    entries = data.get("book", [])
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: no books; add [[book]] tables with a path")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{lines.at('defaults')}: [defaults] must be a table")
    _check_table("[defaults]", defaults, functools.partial(lines.at, table="defaults"))
    run = {k: data[k] for k in RUN_KEYS if k in data}
    _check_settings(run, lines.at)
    output = data.get("output", "audiobooks")
    if not isinstance(output, str) or not output.strip():
        raise UsageError(f"{lines.at('output')}: output must be a folder name (a string), not {output!r}")
    max_cost = data.get("max_cost")
    if max_cost is not None and (
        isinstance(max_cost, bool) or not isinstance(max_cost, int | float) or not 0 <= max_cost < math.inf
    ):
        raise UsageError(f"{lines.at('max_cost')}: max_cost must be US dollars, 0 or more, not {max_cost!r}")
    feed_base_url = data.get("feed_base_url")
    if feed_base_url is not None:
        try:
            check_base_url(feed_base_url)
        except UsageError as exc:
            raise UsageError(f"{lines.at('feed_base_url')}: {exc}") from None
    settings_file = data.get("settings")
    if settings_file is not None and not isinstance(settings_file, str):
        raise UsageError(f"{lines.at('settings')}: settings must name a config file (a string)")

    books: list[BookJob] = []
    missing: list[tuple[str, str]] = []  # (pattern, where it is written)
    seen: set[Path] = set()
    for i, entry in enumerate(entries, 1):
        where = functools.partial(lines.at, table="book", index=i)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise UsageError(f"{where(None)}: book #{i} needs a path (a string)")
        _check_table(f"book #{i} ({entry['path']})", entry, where)
        if "output" in entry and (not isinstance(entry["output"], str) or not entry["output"].strip()):
            raise UsageError(f"{where('output')}: output must be a folder name (a string), not {entry['output']!r}")
        fmt = entry.get("format", defaults.get("format", "mp3"))
        if fmt not in ("mp3", "m4b", "both"):
            raise UsageError(f"{where('format')}: format must be mp3, m4b or both, not {fmt!r}")
        if is_web_url(entry["path"]):  # fetched into its folder when the run reads it
            url = entry["path"].strip()
            overrides = {k: v for k, v in {**defaults, **entry}.items() if k not in _BOOK_KEYS}
            overrides["format"] = fmt
            single = "output" in entry
            out = base / entry["output"] if single else base / output / folder_name(url)
            books.append(BookJob(_url_name(url), out, overrides, fixed=single, url=url))
            continue
        pattern = str(base / entry["path"])
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if glob.has_magic(pattern):
            matches = [m for m in matches if is_book_name(m)]
        if not matches:
            missing.append((entry["path"], where("path")))
            continue
        overrides = {k: v for k, v in {**defaults, **entry}.items() if k not in _BOOK_KEYS}
        for key in ("cache_dir", "lexicon"):  # like every path in a job file, relative to it (a URL is not a path)
            if isinstance(overrides.get(key), str) and not is_url(overrides[key]):
                overrides[key] = base / Path(overrides[key]).expanduser()
        overrides["format"] = fmt
        root = base / entry["output"] if "output" in entry else base / output
        for m in matches:
            if m.resolve() in seen:
                continue  # a later pattern naming the same file does not convert it twice
            seen.add(m.resolve())
            single = len(matches) == 1 and "output" in entry and not glob.has_magic(pattern)
            books.append(BookJob(m, root if single else root / m.stem, overrides, fixed=single))
    if not books:  # a quiet night leaves one glob empty, not all of them: this is a wrong path
        raise UsageError(f"{missing[0][1]}: no book matches {missing[0][0]!r} (nor any other path of the job)")
    library = data.get("library")
    if library is not None and (not isinstance(library, str) or not library.strip()):
        raise UsageError(f"{lines.at('library')}: library must be a folder name (a string), not {library!r}")
    abs_url = data.get("abs_url")
    if abs_url is not None and not isinstance(abs_url, str):
        raise UsageError(f"{lines.at('abs_url')}: abs_url must be a URL (a string), not {abs_url!r}")
    return JobFile(
        library=base / Path(library).expanduser() if library else None,
        abs_url=abs_url,
        path=path,
        lock=path.with_name(path.name + ".lock"),
        base_config=base / settings_file if settings_file else None,
        output=base / output,
        max_cost=float(max_cost) if max_cost is not None else None,
        run=run,
        books=_distinct_folders(books),
        missing=tuple(pattern for pattern, _ in missing),
        feed_base_url=feed_base_url,
    )


def _url_name(url: str) -> Path:
    """A path-like name for a URL's book (host and path), which tells books apart as a file's path does."""
    parts = urlsplit(url)
    return Path(parts.netloc, *[s for s in parts.path.split("/") if s not in ("", ".", "..")])


def is_url_list(path: Path) -> bool:
    """Whether ``path`` is a plain list of URLs (one a line, # comments): its first line that says anything."""
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                text = line.strip()
                if text and not text.startswith("#"):
                    return is_web_url(text)
    except (OSError, UnicodeDecodeError):
        return False
    return False


def url_list_job(path: Path, output: Path, config: Path | None) -> JobFile:
    """Every URL of a plain list (one a line; blank lines and # comments skipped), each book in a folder of
    its own under ``output``: a nightly batch of articles needs no job file."""
    books = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not is_web_url(text):
            raise UsageError(f"{path}:{number}: not an http(s) URL: {text[:80]!r} (a list of URLs holds one a line)")
        books.append(BookJob(_url_name(text), output / folder_name(text), {}, url=text))
    return JobFile(
        path=path,
        lock=path.with_name(path.name + ".lock"),
        base_config=config,
        output=output,
        max_cost=None,
        run={},
        books=_distinct_folders(list({b.url: b for b in books}.values())),
        missing=(),
    )


def folder_job(folder: Path, output: Path, config: Path | None, recursive: bool = False) -> JobFile:
    """Every book in ``folder`` (with ``recursive``, in its subfolders too, hidden ones and links to folders
    left out), as if a job file listed ``folder/*`` (``folder/**/*``): what ``make audiobooks`` runs. Books of
    the same name (book.txt, book.md, a/book.txt) get folders of their own."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder of books (nor a job file)")
    found = list(folder.iterdir())
    if recursive:
        found = []
        for top, dirs, names in os.walk(folder):  # never into links to folders: a loop cannot run for ever
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(top, name) for name in names]
    books = [
        BookJob(p, output / p.stem, {})
        for p in sorted(found)
        if p.is_file() and is_book_name(p) and not p.name.startswith(".")
    ]
    if not books:
        raise UsageError(f"{folder}: holds no book ({', '.join(sorted(BOOK_SUFFIXES))})")
    return JobFile(
        path=folder,
        lock=output / OUTPUT_LOCK,
        base_config=config,
        output=output,
        max_cost=None,
        run={},
        books=_distinct_folders(books),
        missing=(),
    )


def _check_table(what: str, table: dict[str, Any], where: Callable[[str], str]) -> None:
    """A [defaults] or [[book]] table: no run-level key, and every setting valid, each error at its line."""
    for key in table:
        if key.replace("-", "_") in RUN_KEYS:
            # A run-level setting means one thing for the whole run; per book it could only be ignored or misread.
            raise UsageError(
                f"{where(key)}: {what} sets {key!r}, which applies to the whole run, not to one book; "
                f"set it once at the top of the job file"
            )
    _check_settings({k: v for k, v in table.items() if k not in _BOOK_KEYS}, where)


def _check_settings(values: dict[str, Any], where: Callable[[str], str]) -> None:
    for key, value in values.items():
        try:
            Settings().replace(**{key.replace("-", "_"): value})
        except UsageError as exc:
            raise UsageError(f"{where(key)}: {exc}") from None


def _distinct_folders(books: list[BookJob]) -> tuple[BookJob, ...]:
    """Two books never share an output folder (one would overwrite the other, and its files would look stale).
    Books whose folders would collide (book.txt and book.md, or a/book.txt and b/book.txt) each get a folder
    named by as much of their path as tells them apart; a folder the job file names for two books is refused."""
    by_folder: dict[Path, list[BookJob]] = {}
    for bj in books:
        by_folder.setdefault(bj.out_dir, []).append(bj)
    renamed: dict[int, BookJob] = {}
    for folder, group in by_folder.items():
        if len(group) < 2:
            continue
        fixed = next((bj for bj in group if bj.fixed), None)
        if fixed is not None:
            other = next(bj for bj in group if bj is not fixed)
            raise UsageError(
                f"{fixed.source} and {other.source} would both be written to {folder}; give them different outputs"
            )
        parts = [bj.source.resolve().parts for bj in group]
        depth = next((d for d in range(1, 64) if len({p[-d:] for p in parts}) == len(parts)), 64)
        for bj, p in zip(group, parts, strict=True):
            renamed[id(bj)] = dataclasses.replace(bj, out_dir=folder.parent / " - ".join(p[-depth:]))
        log.warning(
            "%s: %d books share this folder name; they go to %s instead",
            folder,
            len(group),
            ", ".join(str(renamed[id(bj)].out_dir) for bj in group),
        )
    return tuple(renamed.get(id(bj), bj) for bj in books)


def write_summary(path: Path, job: JobFile, books: list[BookSummary], *, dry_run: bool, max_cost: float | None) -> None:
    data = {
        "job": str(job.path),
        "dry_run": dry_run,
        "max_cost_usd": max_cost,
        "books": [asdict(b) for b in books],
        "totals": {
            "books": len(books),
            "done": sum(b.status in (BatchStatus.DONE, BatchStatus.UNCHANGED) for b in books),
            "failed": sum(not b.status.ok for b in books),
            "requests": sum(b.requests for b in books),
            "characters_to_send": sum(b.characters_to_send for b in books),
            "estimated_cost_usd": round(sum(b.estimated_cost_usd for b in books), 4),
            "duration_s": round(sum(b.duration_s for b in books), 3),
            "verified": sum(b.verified for b in books),
            "remade": sum(b.remade for b in books),
            "unverified": sum(b.unverified for b in books),
        },
    }
    atomic_write(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def name_of(b: BookSummary) -> str:
    return Path(b.source).name if b.output else b.source  # a path that matched nothing is shown whole


def names_of(books: list[BookSummary]) -> list[str]:
    """Each book's name in the run's lines: its file name, or for books of the same file name (a/book.txt,
    b/book.txt) as much of their path as tells them apart, as their output folders are named."""
    names = [name_of(b) for b in books]
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name and books[i].output]
        if len(same) < 2:
            continue
        parts = [Path(books[i].source).parts for i in same]
        depth = next((d for d in range(2, 64) if len({p[-d:] for p in parts}) == len(parts)), 64)
        for i, p in zip(same, parts, strict=True):
            names[i] = "/".join(p[-depth:])
    return names


def format_summary(books: list[BookSummary], summary_path: Path | None, *, dry_run: bool) -> str:
    lines = []
    for b, name in zip(books, names_of(books), strict=True):
        extra = f"{b.chapters} chapter{'' if b.chapters == 1 else 's'}"
        if b.duration_s:
            extra += f", {b.duration_s / 60:.1f} min"
        if b.status in (BatchStatus.PLANNED, BatchStatus.OVER_BUDGET) or dry_run:
            extra += f", {b.characters_to_send:,} chars to send, ~${b.estimated_cost_usd:.2f}"
        elif b.requests or b.cache_hits:
            extra += f", {b.requests} requests, {b.retries} retries, {b.cache_hits} cached"
        if b.verified:
            extra += f", {b.verified} verified, {b.remade} made again, {b.unverified} unverified"
        line = f"{b.status:<12} {name}  ({extra})"
        if b.error:
            line += f"\n             {b.error}"
        lines.append(line)
    total_cost = sum(b.estimated_cost_usd for b in books)
    real = [b for b in books if b.status != BatchStatus.NO_MATCH]  # an empty glob is no book to count
    done = sum(b.status in (BatchStatus.DONE, BatchStatus.UNCHANGED) for b in real)
    verb = "would send" if dry_run else "sent"
    lines.append(
        f"{done}/{len(real)} books done; {verb} {sum(b.characters_to_send for b in books):,} characters "
        f"(~${total_cost:.2f})" + (f"; summary: {summary_path}" if summary_path else "")
    )
    if unverified := sum(b.unverified for b in books):
        lines.append(f"{unverified} part{'' if unverified == 1 else 's'} unverified")
    return "\n".join(lines)


def format_failures(books: list[BookSummary]) -> str | None:
    """The one line that says which books were not done, or None when all were."""
    failed = [(s, name) for s, name in zip(books, names_of(books), strict=True) if not s.status.ok]
    if not failed:
        return None
    names = "; ".join(f"{name}: {s.status}" + (f" ({s.error})" if s.error else "") for s, name in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {len(books)} books not done: {names}{more}"
