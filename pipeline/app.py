"""The library API every front end calls (the CLI, batch jobs, the benchmark): typed values in, typed results
out. Nothing here parses arguments or prints; the front ends do that and format what comes back.

    book  = read(path, settings.book)
    plan  = plan(book, settings, out_dir)             # sends nothing, writes nothing
    done  = convert([plan], settings.run)             # reports per book; .interrupted when a signal stopped it
    batch = run_batch(load_jobs(path))                # every book of a job file, one run
    clips = make_clips([(preview_plan(book, settings, out_dir), out_dir / "preview.mp3")], settings.run)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import glob
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from filelock import FileLock, Timeout

from pipeline import bookmeta, listen
from pipeline.batch import OUTPUT_LOCK, BatchStatus, BookJob, BookSummary, JobFile, write_summary
from pipeline.config import BookOptions, RunOptions, Settings, limits_file, load_settings
from pipeline.engines.local import LocalExecutor
from pipeline.errors import AudiobookError, LockHeld
from pipeline.feed import Channel, FeedResult, write_feed
from pipeline.media import require_ffmpeg
from pipeline.models import BackendOptions, Book, PartRequest
from pipeline.options import default_cache_dir
from pipeline.outputs import prepare_output
from pipeline.planning import BookPlan, plan_book
from pipeline.progress import Progress
from pipeline.readers import check_file, read_book
from pipeline.report import BookReport
from pipeline.runner import Run
from pipeline.store import Stores
from pipeline.textfacts import is_cjk
from pipeline.tts import registry
from pipeline.tts.registry import Synthesizers

if TYPE_CHECKING:
    from pipeline.tts.openai_http import OpenAISpeech
    from pipeline.tts.transcribe import Transcriber

log = logging.getLogger("audiobook")


def read(
    source: Path | str, options: BookOptions, *, download_to: Path | None = None, allow_private: bool | None = None
) -> Book:
    """The book at ``source``: a file, or a URL fetched into ``download_to`` (the book's output folder, where the
    copy stays so a rerun needs no network; see ``pipeline.fetch``; without one, a folder of the user's cache
    named by the URL). ``allow_private`` lets a URL lead to this machine or the local network (default:
    ``$AUDIOBOOK_ALLOW_PRIVATE_URLS``)."""
    from pipeline.fetch import is_url

    if not is_url(source):
        book = read_book(Path(source), include_matter=options.include_matter, language=options.language)
        return bookmeta.complete(book, options)  # flags and job file over the book's metadata; a JPEG cover
    from pipeline.fetch import fetch, private_urls_allowed

    url = str(source).strip()
    if download_to is None:
        download_to = default_cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:24]
    allowed = private_urls_allowed() if allow_private is None else allow_private
    got = fetch(url, download_to, allow_private=allowed)
    book = read_book(got.path, include_matter=options.include_matter, language=options.language)
    info = dataclasses.replace(book.info, url=url, site=book.info.site or urlsplit(got.final_url).hostname)
    return bookmeta.complete(dataclasses.replace(book, info=info), options)


def plan(book: Book, settings: Settings, out_dir: Path, stores: Stores | None = None) -> BookPlan:
    """What converting ``book`` into ``out_dir`` would take. ``stores`` lets plans of one run share stores."""
    store = (stores or Stores()).at(settings.book.cache_location)
    return plan_book(book, settings, out_dir, store)


@dataclass(frozen=True)
class RunResult:
    reports: tuple[BookReport, ...]  # one per plan, in the same order
    interrupted: str | None  # the signal that stopped the run, or None


def convert(
    plans: Sequence[BookPlan],
    run: RunOptions,
    *,
    stores: Stores | None = None,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
    assemble: bool = True,
) -> RunResult:
    """Make every part the plans lack, assemble every chapter, finish every complete book, write its report.

    Checks before the first request what would make paid work useless: a missing key, an unwritable store or
    output folder (UsageError). ``assemble=False`` only fills the stores. With ``run.engine == "celery"`` the
    work goes to workers through ``run.broker`` (their keys are their own: none is checked or needed here)."""
    stores = stores or Stores()
    return_freed_memory()
    for location in dict.fromkeys(p.store for p in plans):
        stores.at(location).check_writable()
    for p in plans:
        prepare_output(p.out_dir)
    if run.engine == "celery":
        return _convert_on_workers(plans, run, stores, progress, assemble)
    if assemble:  # an ffmpeg named in $AUDIOBOOK_FFMPEG that lacks what these books need fails before a request
        uses = (
            {"mp3"} | {"loudness" for p in plans if p.options.loudness} | {"m4b" for p in plans if p.options.builds_m4b}
        )
        require_ffmpeg(*sorted(uses))

    synths = Synthesizers(run.concurrency, env, memory=limits_file(p.store for p in plans))
    for p in plans:
        synths(p.backend)  # a missing key fails here, before any request
    if progress is not None:
        progress.rate = synths.rate_status  # the line says when the key's rate limit holds the run back

    async def main() -> RunResult:
        try:
            async with LocalExecutor(synths, stores, run.concurrency, on_stop=synths.stop) as executor:
                reports = await Run(
                    plans,
                    executor,
                    stores,
                    progress=progress,
                    assemble=assemble,
                    limits=lambda options: synths.governor(options).stats(),
                    transcriber=_transcribers(plans, synths, stores, env),
                ).execute()
                return RunResult(tuple(reports), executor.interrupted)
        finally:
            synths.remember()
            await synths.aclose()

    return asyncio.run(main())


def _transcribers(
    plans: Sequence[BookPlan], synths: Synthesizers, stores: Stores, env: Mapping[str, str] | None
) -> Callable[[PartRequest], Transcriber | None] | None:
    """The transcript check's clients (``verify = "transcribe"``), one per endpoint and store, built on first
    use: through the speech client's connections and retries, paced by a governor of their own registered with
    the run's (so a stop, the progress line's rate word, the closing flush and the remembered limits cover
    it), keeping transcripts in the part's store. None for a backend with no transcription endpoint."""
    if not any(p.options.verify == "transcribe" for p in plans):
        return None
    from pipeline.tts import registry
    from pipeline.tts.transcribe import Transcriber, governor_key, transcription_governor

    environ = os.environ if env is None else env
    made: dict[tuple[BackendOptions, str], Transcriber | None] = {}

    def transcriber(request: PartRequest) -> Transcriber | None:
        options = request.backend
        if (options, request.store) not in made:
            client = None
            if registry.canonical(options.name) == "openai":  # the offline voice has no recogniser
                speech = cast("OpenAISpeech", synths(options))
                where = governor_key(options, environ)
                if where not in synths.governors:
                    synths.governors[where] = transcription_governor(options, synths.connections)
                client = Transcriber(
                    speech, model=options.transcribe_model, governor=synths.governors[where],
                    store=stores.at(request.store),
                )  # fmt: skip
            made[(options, request.store)] = client
        return made[(options, request.store)]

    return transcriber


# glibc's malloc options (mallopt): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def return_freed_memory() -> None:
    """Make freed answers go back to the operating system (glibc only; elsewhere nothing changes).

    Each answer is a block of a few hundred kB. glibc serves blocks that size from mmap until the first is freed,
    then raises its threshold and serves them from its heaps, one per thread that allocates, which keep what is
    freed: a long run's RSS rose to twice its live memory. A fixed threshold (64 kB) keeps answers in mmap,
    returned at once when freed; the small cost is a map and an unmap per answer."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)


def _not_a_book(path: Path) -> str:
    """Why a job's path names no book: missing, a dangling or looping link, a folder, a FIFO..."""
    try:
        check_file(path)
    except AudiobookError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return "no such file"


def _convert_on_workers(
    plans: Sequence[BookPlan], run: RunOptions, stores: Stores, progress: Progress | None, assemble: bool
) -> RunResult:
    from pipeline.engines.celery import CeleryExecutor  # Celery is an extra: only imported when asked for

    if any(p.options.verify == "transcribe" for p in plans):
        log.warning("verify = transcribe: the transcript check runs with --engine local only; timing check only")

    async def main() -> RunResult:
        async with CeleryExecutor(run) as executor:
            work = Run(plans, executor, stores, progress=progress, assemble=assemble)
            if progress is not None:
                progress.rate = work.rate_status  # the workers hold the governors: their notes tell
            reports = await work.execute()
            return RunResult(tuple(reports), executor.interrupted)

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class BatchResult:
    books: tuple[BookSummary, ...]  # in the job file's order; patterns that matched nothing first
    planned: tuple[BookPlan, ...]  # the plans of the books this run worked on (or would, in a dry run)
    summary_path: Path | None  # where the summary was written, if it was
    interrupted: str | None
    feed: FeedResult | None = None  # the podcast feed written at the end, when the job asks for one
    feed_error: str | None = None  # why it could not be written

    @property
    def failed(self) -> tuple[BookSummary, ...]:
        return tuple(b for b in self.books if not b.status.ok)


def run_batch(
    job: JobFile,
    *,
    dry_run: bool = False,
    max_cost: float | None = None,
    summary_path: Path | None = None,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
    allow_private_urls: bool | None = None,
) -> BatchResult:
    """Every book of a job file through one run, incrementally: unchanged books are settled without a request,
    a book that fails does not stop the others, work past the budget is refused by name. One run at a time
    per job file, and one per output folder, whichever job writes to it (LockHeld otherwise: two runs would
    overwrite each other's summary and books). A summary is written unless this is a dry run with no
    ``summary_path``; a dry run writes nothing to the output folder, so it does not lock it."""
    with contextlib.ExitStack() as held:
        _lock(held, job.lock, f"another run of {job.path} is in progress")
        folder_lock = job.output / OUTPUT_LOCK
        if not dry_run and folder_lock != job.lock:
            _lock(held, folder_lock, f"output folder {job.output} is in use by another run")
        budget = job.max_cost if max_cost is None else max_cost
        return _run_batch(job, dry_run, budget, summary_path, progress, env, allow_private_urls)


def _lock(held: contextlib.ExitStack, path: Path, busy: str) -> None:
    """Hold an OS lock on ``path`` until ``held`` closes, or raise LockHeld at once (a killed run's lock file
    holds no lock: the OS released it with the process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockHeld(f"{busy} (lock {path}); try again later") from None
    held.callback(lock.release)


def _run_batch(
    job: JobFile,
    dry_run: bool,
    max_cost: float | None,
    summary_path: Path | None,
    progress: Progress | None,
    env: Mapping[str, str] | None,
    allow_private_urls: bool | None = None,
) -> BatchResult:
    base = load_settings(job.base_config, env=env, overrides=job.run)
    stores = Stores()
    summaries: dict[Path, BookSummary] = {}
    for pattern in job.missing:
        if glob.has_magic(pattern):  # an empty folder on a quiet night is not a failure
            log.warning("%s: no book matches this pattern", pattern)
            summaries[Path(pattern)] = BookSummary(pattern, "", BatchStatus.NO_MATCH)
        else:
            summaries[Path(pattern)] = BookSummary(
                pattern, "", BatchStatus.FAILED, error=_not_a_book(job.path.parent / pattern)
            )

    todo: list[tuple[BookJob, BookPlan]] = []
    spent = 0.0
    for bj in job.books:
        try:
            settings = load_settings(job.base_config, env=env, overrides={**job.run, **bj.overrides})
            book = read(bj.url or bj.source, settings.book, download_to=bj.out_dir, allow_private=allow_private_urls)
            book_plan = plan(book, settings, bj.out_dir, stores)
        except AudiobookError as exc:
            summaries[bj.source] = BookSummary(bj.label, str(bj.out_dir), BatchStatus.FAILED, error=str(exc))
            log.error("%s: %s", bj.label, exc)
            continue
        if book_plan.complete:  # settled now, without a request or an assembly
            summaries[bj.source] = _planned(bj, book_plan, BatchStatus.UNCHANGED)
            continue
        cost = book_plan.estimated_cost
        if max_cost is not None and spent + cost > max_cost + 1e-9:
            error = f"estimated ${cost:.2f} would pass the budget of ${max_cost:.2f} (${spent:.2f} already planned)"
            summaries[bj.source] = _planned(bj, book_plan, BatchStatus.OVER_BUDGET, error)
            continue
        spent += cost
        todo.append((bj, book_plan))
        summaries[bj.source] = _planned(bj, book_plan, BatchStatus.PLANNED if dry_run else BatchStatus.NOT_STARTED)

    interrupted = None
    if not dry_run and todo:
        result = convert([p for _, p in todo], base.run, stores=stores, progress=progress, env=env)
        interrupted = result.interrupted
        for (bj, _plan), report in zip(todo, result.reports, strict=True):
            summaries[bj.source] = BookSummary(
                source=bj.label,
                output=str(bj.out_dir),
                status=BatchStatus(report.status),
                chapters=len(report.chapters),
                duration_s=report.duration_s,
                requests=report.requests,
                retries=report.retries,
                cache_hits=report.cache_hits,
                characters_to_send=report.characters_sent,
                estimated_cost_usd=report.estimated_cost_usd,
                error=report.problem(),
                verified=report.verification.verified if report.verification else 0,
                remade=report.verification.remade if report.verification else 0,
                unverified=report.verification.suspect if report.verification else 0,
            )

    if job.library is not None and not dry_run:
        from pipeline.library import place_books

        place_books(job.library, job.abs_url, [(bj.out_dir, summaries[bj.source].status) for bj in job.books])
    books = [summaries[k] for k in [Path(p) for p in job.missing] + [b.source for b in job.books]]
    written = None
    if not dry_run or summary_path:  # a dry run writes nothing unless asked to
        written = summary_path or job.output / "batch-summary.json"
        write_summary(written, job, books, dry_run=dry_run, max_cost=max_cost)
    feed, feed_error = None, None
    if job.feed_base_url and not dry_run:  # every finished book under the output folder, this run's and before
        try:
            feed = write_feed(job.output, Channel(job.feed_base_url))
        except (AudiobookError, OSError) as exc:
            feed_error = str(exc)
    return BatchResult(tuple(books), tuple(p for _, p in todo), written, interrupted, feed, feed_error)


def _planned(bj: BookJob, book_plan: BookPlan, status: BatchStatus, error: str | None = None) -> BookSummary:
    unchanged = status == BatchStatus.UNCHANGED
    return BookSummary(
        source=bj.label,
        output=str(bj.out_dir),
        status=status,
        chapters=len(book_plan.chapters),
        cache_hits=sum(sum(c.cached) for c in book_plan.chapters),
        characters_to_send=0 if unchanged else book_plan.characters_to_send,
        estimated_cost_usd=0.0 if unchanged else round(book_plan.estimated_cost, 4),
        error=error,
    )


# ------------------------------------------------------------------------------- listening before paying


def preview_plan(book: Book, settings: Settings, out_dir: Path, stores: Stores | None = None) -> BookPlan:
    """What ``--preview`` makes: about ``settings.book.preview_seconds`` of the first real chapter (of the
    selection, with ``chapters``), the first segments the full run makes. Sends nothing."""
    return listen.preview_plan(plan(book, settings, out_dir, stores), settings.book.preview_seconds)


def sample_plans(
    settings: Settings,
    voices: Sequence[str] | None,
    out_dir: Path,
    *,
    text: str | None = None,
    book: Book | None = None,
) -> tuple[BookPlan, ...]:
    """One plan per voice for ``audiobook voices --sample``: the same passage (``text``, else the start of
    ``book``, else our own), one short chapter each. ``voices`` None: the backend's voices for the passage's
    language (the offline voice: its voices of that language). Sends nothing."""
    language = settings.book.language or (book.language if book else None)
    words = listen.passage(book, text, language, min(listen.SAMPLE_CHARS, settings.book.max_chars))
    language = language or ("zh" if is_cjk(words) else "en")
    backend = registry.backend_for(settings.backend)
    defaults = backend.sample_voices(language) if backend.sample_voices else [v.name for v in backend.voices()]
    stores = Stores()
    return tuple(
        plan(listen.sample_book(words, language), settings.replace(voice=v, announce_titles=False, chapters=None),
             out_dir, stores)
        for v in listen.voices_to_sample(voices, defaults)
    )  # fmt: skip


@dataclass(frozen=True)
class ClipResult:
    plan: BookPlan  # one chapter: what was asked for
    report: BookReport  # what it took: requests, characters sent, estimated cost, failures
    clip: listen.Clip | None  # None when a part could not be made (``problem`` says why)
    problem: str | None = None


def make_clips(
    clips: Sequence[tuple[BookPlan, Path]],
    run: RunOptions,
    *,
    stores: Stores | None = None,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[tuple[ClipResult, ...], str | None]:
    """Make the parts of every (one-chapter) plan in one pool, as ``convert`` does, then write each to its path.
    Returns the results, and the signal that interrupted the run (None)."""
    stores = stores or Stores()
    plans = [p for p, _ in clips]
    require_ffmpeg(*sorted({"mp3"} | {"loudness" for p in plans if p.options.loudness}))
    result = convert(plans, run, stores=stores, progress=progress, env=env, assemble=False)
    out: list[ClipResult] = []
    for (p, path), report in zip(clips, result.reports, strict=True):
        store, fmt = stores.at(p.store), p.options.part_format
        missing = [k for cp in p.chapters for k in cp.keys if not store.has(k, fmt)]
        if missing or result.interrupted:
            why = report.error or (report.problem() if report.failures else None) or f"{len(missing)} part(s) missing"
            out.append(ClipResult(p, report, None, why))
            continue
        out.append(ClipResult(p, report, listen.write_clip(p, stores, path)))
    return tuple(out), result.interrupted
