"""Batch job files, and the summary a batch run leaves. ``app.run_batch`` runs them.

A job file is TOML:

    settings = "default.toml"     # optional base config, relative to the job file
    output = "audiobooks"         # root folder; each book goes to <output>/<book file stem>/
    max_cost = 20.0               # optional budget in USD (estimated); --max-cost overrides
    concurrency = 8               # the run's own settings, shared by every book: set here, never per book

    [defaults]                    # settings for every book (any per-book key of configs/default.toml)
    voice = "alloy"

    [[book]]
    path = "library/*.epub"       # a path or a glob, relative to the job file
    voice = "nova"                # per-book overrides: any per-book setting, plus output and format
"""

from __future__ import annotations

import glob
import json
import tomllib
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipeline.config import RUN_KEYS
from pipeline.errors import UsageError
from pipeline.files import atomic_write

BOOK_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".epub", ".html", ".htm", ".xhtml"}
_JOB_KEYS = {"settings", "output", "max_cost", "defaults", "book"} | RUN_KEYS
_BOOK_KEYS = {"path", "output", "format"}


@dataclass(frozen=True)
class BookJob:
    source: Path
    out_dir: Path
    overrides: dict[str, Any]


@dataclass(frozen=True)
class JobFile:
    path: Path
    base_config: Path | None
    output: Path
    max_cost: float | None
    run: dict[str, Any]  # run-level settings the job file sets (concurrency)
    books: tuple[BookJob, ...]
    missing: tuple[str, ...]  # patterns that matched nothing


class BatchStatus(StrEnum):
    DONE = "done"
    UNCHANGED = "unchanged"  # every chapter was current: nothing sent, nothing written
    FAILED = "failed"
    INTERRUPTED = "interrupted"
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


def load_jobs(path: Path) -> JobFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"job file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read job file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"job file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - _JOB_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_JOB_KEYS))})")
    base = path.parent
    entries = data.get("book", [])
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: no books; add [[book]] tables with a path")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: [defaults] must be a table")
    _refuse_run_keys(path, "[defaults]", defaults)
    output = base / str(data.get("output", "audiobooks"))
    books: list[BookJob] = []
    missing: list[str] = []
    seen: set[Path] = set()
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UsageError(f"{path}: book #{i} needs a path")
        _refuse_run_keys(path, f"book #{i} ({entry['path']})", entry)
        pattern = str(base / entry["path"])
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if glob.has_magic(pattern):
            matches = [m for m in matches if m.suffix.lower() in BOOK_SUFFIXES]
        if not matches:
            missing.append(entry["path"])
            continue
        overrides = {k: v for k, v in {**defaults, **entry}.items() if k not in _BOOK_KEYS}
        if isinstance(overrides.get("cache_dir"), str):  # like every path in a job file, relative to it
            overrides["cache_dir"] = base / Path(overrides["cache_dir"]).expanduser()
        fmt = entry.get("format", defaults.get("format", "mp3"))
        if fmt not in ("mp3", "m4b"):
            raise UsageError(f"{path}: book #{i}: format must be mp3 or m4b, not {fmt!r}")
        if fmt == "m4b":
            overrides["m4b"] = True
        root = base / str(entry["output"]) if "output" in entry else output
        for m in matches:
            if m.resolve() in seen:
                continue  # a later pattern naming the same file does not convert it twice
            seen.add(m.resolve())
            single = len(matches) == 1 and "output" in entry and not glob.has_magic(pattern)
            books.append(BookJob(m, root if single else root / m.stem, overrides))
    settings_file = data.get("settings")
    max_cost = data.get("max_cost")
    return JobFile(
        path=path,
        base_config=base / settings_file if settings_file else None,
        output=output,
        max_cost=float(max_cost) if max_cost is not None else None,
        run={k: data[k] for k in RUN_KEYS if k in data},
        books=tuple(books),
        missing=tuple(missing),
    )


def _refuse_run_keys(path: Path, where: str, table: dict[str, Any]) -> None:
    """A run-level setting means one thing for the whole run; per book it could only be ignored or misread."""
    for key in table:
        if key.replace("-", "_") in RUN_KEYS:
            raise UsageError(
                f"{path}: {where} sets {key!r}, which applies to the whole run, not to one book; "
                f"set it once at the top of the job file"
            )


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
        },
    }
    atomic_write(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def name_of(b: BookSummary) -> str:
    return Path(b.source).name if b.output else b.source  # a path that matched nothing is shown whole


def format_summary(books: list[BookSummary], summary_path: Path | None, *, dry_run: bool) -> str:
    lines = []
    for b in books:
        extra = f"{b.chapters} chapter{'' if b.chapters == 1 else 's'}"
        if b.duration_s:
            extra += f", {b.duration_s / 60:.1f} min"
        if b.status in (BatchStatus.PLANNED, BatchStatus.OVER_BUDGET) or dry_run:
            extra += f", {b.characters_to_send:,} chars to send, ~${b.estimated_cost_usd:.2f}"
        elif b.requests or b.cache_hits:
            extra += f", {b.requests} requests, {b.retries} retries, {b.cache_hits} cached"
        line = f"{b.status:<12} {name_of(b)}  ({extra})"
        if b.error:
            line += f"\n             {b.error}"
        lines.append(line)
    total_cost = sum(b.estimated_cost_usd for b in books)
    done = sum(b.status in (BatchStatus.DONE, BatchStatus.UNCHANGED) for b in books)
    verb = "would send" if dry_run else "sent"
    lines.append(
        f"{done}/{len(books)} books done; {verb} {sum(b.characters_to_send for b in books):,} characters "
        f"(~${total_cost:.2f})" + (f"; summary: {summary_path}" if summary_path else "")
    )
    return "\n".join(lines)


def format_failures(books: list[BookSummary]) -> str | None:
    """The one line that says which books were not done, or None when all were."""
    failed = [s for s in books if not s.status.ok]
    if not failed:
        return None
    names = "; ".join(f"{name_of(s)}: {s.status}" + (f" ({s.error})" if s.error else "") for s in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {len(books)} books not done: {names}{more}"
