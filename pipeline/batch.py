"""Batch jobs: every book a job file lists, through one shared pool, incrementally and unattended.

A job file is TOML:

    settings = "default.toml"     # optional base config, relative to the job file
    output = "audiobooks"         # root folder; each book goes to <output>/<book file stem>/
    max_cost = 20.0               # optional budget in USD (estimated); --max-cost overrides

    [defaults]                    # settings for every book (any key of configs/default.toml)
    voice = "alloy"

    [[book]]
    path = "library/*.epub"       # a path or a glob, relative to the job file
    voice = "nova"                # per-book overrides: any setting, plus output and format ("mp3" or "m4b")

One run at a time per job file (a lock beside it; the OS releases it when a run dies, so a killed run never
blocks the next). A book that fails does not stop the others. Every run writes a JSON summary.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipeline.errors import AudiobookError, LockHeld, UsageError

log = logging.getLogger("audiobook")

BOOK_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".epub", ".html", ".htm", ".xhtml"}
_JOB_KEYS = {"settings", "output", "max_cost", "concurrency", "defaults", "book"}
_BOOK_KEYS = {"path", "output", "format"}


@dataclass(frozen=True)
class BookJob:
    source: Path
    out_dir: Path
    overrides: dict[str, Any]


@dataclass(frozen=True)
class BookSummary:
    source: str
    output: str
    status: str  # "done", "unchanged", "failed", "over budget", "not started", "interrupted", "planned"
    chapters: int = 0
    duration_s: float = 0.0
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    characters_to_send: int = 0
    estimated_cost_usd: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class JobFile:
    path: Path
    base_config: Path | None
    output: Path
    max_cost: float | None
    concurrency: int | None
    books: tuple[BookJob, ...]
    missing: tuple[str, ...]  # patterns that matched nothing


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
    output = base / str(data.get("output", "audiobooks"))
    books: list[BookJob] = []
    missing: list[str] = []
    seen: set[Path] = set()
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise UsageError(f"{path}: book #{i} needs a path")
        pattern = str(base / entry["path"])
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if glob.has_magic(pattern):
            matches = [m for m in matches if m.suffix.lower() in BOOK_SUFFIXES]
        if not matches:
            missing.append(entry["path"])
            continue
        overrides = {k: v for k, v in {**defaults, **entry}.items() if k not in _BOOK_KEYS}
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
    concurrency = data.get("concurrency")
    return JobFile(
        path=path,
        base_config=base / settings_file if settings_file else None,
        output=output,
        max_cost=float(max_cost) if max_cost is not None else None,
        concurrency=int(concurrency) if concurrency is not None else None,
        books=tuple(books),
        missing=tuple(missing),
    )


def run_batch(args: argparse.Namespace) -> int:
    from pipeline.cache import PartCache
    from pipeline.cli import progress_for
    from pipeline.config import load_settings
    from pipeline.readers import read_book
    from pipeline.runner import BookPlan, Runner, note_retry, plan_book, prepare_output
    from pipeline.tts.factory import synth_factory

    job = load_jobs(args.jobs)
    lock = FileLock(str(args.jobs) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockHeld(f"another run of {args.jobs} is in progress (lock {args.jobs}.lock); try again later") from None
    try:
        base = load_settings(job.base_config)
        concurrency = job.concurrency or base.concurrency
        max_cost = args.max_cost if args.max_cost is not None else job.max_cost
        summaries: dict[Path, BookSummary] = {}
        plans: list[tuple[BookJob, BookPlan]] = []
        for pattern in job.missing:
            if glob.has_magic(pattern):  # an empty folder on a quiet night is not a failure
                log.warning("%s: no book matches this pattern", pattern)
                summaries[Path(pattern)] = BookSummary(pattern, "", "no match")
            else:
                summaries[Path(pattern)] = BookSummary(pattern, "", "failed", error="no such file")
        for bj in job.books:
            try:
                settings = load_settings(job.base_config, overrides=bj.overrides)
                book = read_book(bj.source, include_matter=settings.include_matter, language=settings.language)
                plan = plan_book(book, settings, bj.out_dir, PartCache(settings.resolved_cache_dir))
            except AudiobookError as exc:
                summaries[bj.source] = BookSummary(str(bj.source), str(bj.out_dir), "failed", error=str(exc))
                log.error("%s: %s", bj.source, exc)
                continue
            plans.append((bj, plan))

        # Books with nothing to do are settled now, without a request or an assembly.
        todo: list[tuple[BookJob, BookPlan]] = []
        spent = 0.0
        for bj, plan in plans:
            if all(c.up_to_date for c in plan.chapters):
                summaries[bj.source] = _summary(bj, plan, "unchanged")
                continue
            cost = plan.estimated_cost
            if max_cost is not None and spent + cost > max_cost + 1e-9:
                summaries[bj.source] = _summary(
                    bj,
                    plan,
                    "over budget",
                    error=f"estimated ${cost:.2f} would pass the budget of ${max_cost:.2f} "
                    f"(${spent:.2f} already planned)",
                )
                continue
            spent += cost
            todo.append((bj, plan))
            summaries[bj.source] = _summary(bj, plan, "planned" if args.dry_run else "not started")

        if not args.dry_run and todo:
            synth_for = synth_factory(on_retry=note_retry)
            for _, plan in todo:
                synth_for(plan.settings)  # a missing key fails here, before any request
                prepare_output(plan.out_dir)
            PartCache(base.resolved_cache_dir).check_writable()
            runner = Runner(
                synth_for, PartCache(base.resolved_cache_dir), concurrency=concurrency, progress=progress_for(args)
            )
            reports = runner.run([p for _, p in todo])
            for (bj, _plan), report in zip(todo, reports, strict=True):
                summaries[bj.source] = BookSummary(
                    source=str(bj.source),
                    output=str(bj.out_dir),
                    status=report.status,
                    chapters=len(report.chapters),
                    duration_s=report.duration_s,
                    requests=report.requests,
                    retries=report.retries,
                    cache_hits=report.cache_hits,
                    characters_to_send=report.characters_sent,
                    estimated_cost_usd=report.estimated_cost_usd,
                    error=report.problem(),
                )
            interrupted = runner.stop_reason
        else:
            interrupted = None

        ordered = [summaries[k] for k in [Path(p) for p in job.missing] + [b.source for b in job.books]]
        summary_path = args.summary or job.output / "batch-summary.json"
        if not args.dry_run or args.summary:  # a dry run writes nothing unless asked to
            _write_summary(summary_path, job, ordered, dry_run=args.dry_run, max_cost=max_cost)
        if args.json:
            print(json.dumps([asdict(s) for s in ordered], ensure_ascii=False, indent=2))
        else:
            if args.dry_run:
                from pipeline.cli import format_plan

                for _, plan in todo:
                    print(format_plan(plan.summary()) + "\n")
            written = None if args.dry_run and not args.summary else summary_path
            print(format_summary(ordered, written, dry_run=args.dry_run))
        if interrupted:
            from pipeline.errors import Interrupted

            raise Interrupted(f"batch interrupted by {interrupted}; finished parts are cached, run again to resume")
        failed = [s for s in ordered if s.status not in ("done", "unchanged", "planned", "no match")]
        if failed:
            names = "; ".join(f"{_name(s)}: {s.status}" + (f" ({s.error})" if s.error else "") for s in failed[:3])
            more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
            print(
                f"audiobook: error: {len(failed)} of {len(ordered)} books not done: {names}{more}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        lock.release()


def _summary(bj: BookJob, plan: Any, status: str, error: str | None = None) -> BookSummary:
    chapters = plan.chapters
    return BookSummary(
        source=str(bj.source),
        output=str(bj.out_dir),
        status=status,
        chapters=len(chapters),
        cache_hits=sum(sum(c.cached) for c in chapters),
        characters_to_send=0 if status == "unchanged" else plan.characters_to_send,
        estimated_cost_usd=0.0 if status == "unchanged" else round(plan.estimated_cost, 4),
        error=error,
    )


def _write_summary(
    path: Path, job: JobFile, books: list[BookSummary], *, dry_run: bool, max_cost: float | None
) -> None:
    data = {
        "job": str(job.path),
        "dry_run": dry_run,
        "max_cost_usd": max_cost,
        "books": [asdict(b) for b in books],
        "totals": {
            "books": len(books),
            "done": sum(b.status in ("done", "unchanged") for b in books),
            "failed": sum(b.status not in ("done", "unchanged", "planned", "no match") for b in books),
            "requests": sum(b.requests for b in books),
            "characters_to_send": sum(b.characters_to_send for b in books),
            "estimated_cost_usd": round(sum(b.estimated_cost_usd for b in books), 4),
            "duration_s": round(sum(b.duration_s for b in books), 3),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _name(b: BookSummary) -> str:
    return Path(b.source).name if b.output else b.source  # a path that matched nothing is shown whole


def format_summary(books: list[BookSummary], summary_path: Path | None, *, dry_run: bool) -> str:
    lines = []
    for b in books:
        extra = f"{b.chapters} chapter{'' if b.chapters == 1 else 's'}"
        if b.duration_s:
            extra += f", {b.duration_s / 60:.1f} min"
        if b.status in ("planned", "over budget") or dry_run:
            extra += f", {b.characters_to_send:,} chars to send, ~${b.estimated_cost_usd:.2f}"
        elif b.requests or b.cache_hits:
            extra += f", {b.requests} requests, {b.retries} retries, {b.cache_hits} cached"
        line = f"{b.status:<12} {_name(b)}  ({extra})"
        if b.error:
            line += f"\n             {b.error}"
        lines.append(line)
    total_cost = sum(b.estimated_cost_usd for b in books)
    done = sum(b.status in ("done", "unchanged") for b in books)
    verb = "would send" if dry_run else "sent"
    lines.append(
        f"{done}/{len(books)} books done; {verb} {sum(b.characters_to_send for b in books):,} characters "
        f"(~${total_cost:.2f})" + (f"; summary: {summary_path}" if summary_path else "")
    )
    return "\n".join(lines)
