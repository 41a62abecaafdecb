"""The worker pool: plan what a book needs, synthesize what the cache lacks, assemble chapters as they complete.

One bounded pool serves every segment of every book in the run (a batch shares it too), so concurrency never
drains at a chapter's or a book's end. Identical segments are requested once. Every finished part goes to the
cache before it counts as done, so an interrupted run loses at most the requests in flight. A chapter is
assembled as soon as its last part arrives, one chapter at a time. A chapter with a missing part is never
written: the run ends with exit 1 and names what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline import audio
from pipeline.cache import PartCache, part_key
from pipeline.chunker import chunk_chapter
from pipeline.config import Settings
from pipeline.errors import AudioError, FatalAPIError, Interrupted, SynthesisError, UsageError
from pipeline.models import Book, Chapter, ChapterAudio, Segment, VoiceSpec
from pipeline.progress import Progress
from pipeline.tts.base import Synthesizer
from pipeline.tts.factory import endpoint, identity_for

log = logging.getLogger("audiobook")

REPORT_NAME = "report.json"
# After this many segments in a row fail even with their retries, the server is taken to be down: stop
# instead of paying for (or waiting on) every remaining request.
MAX_CONSECUTIVE_FAILURES = 3
# Statuses that mean every further request of this run would fail the same way.
GLOBAL_FATAL_STATUSES = {401, 403}


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ChapterPlan:
    chapter: Chapter
    segments: tuple[Segment, ...]
    keys: tuple[str, ...]  # cache key of each segment
    cached: tuple[bool, ...]  # whether each part was already in the cache when planned
    fingerprint: str  # everything the chapter file depends on; equal fingerprint means the file is current
    filename: str
    up_to_date: bool  # the file from an earlier run exists with this fingerprint: nothing to do
    previous_duration_s: float | None = None  # that file's length, from the earlier run's report

    @property
    def characters(self) -> int:
        return sum(len(s.text) for s in self.segments)


@dataclass(frozen=True)
class BookPlan:
    book: Book
    settings: Settings
    out_dir: Path
    identity: str
    chapters: tuple[ChapterPlan, ...]

    @property
    def segments(self) -> int:
        return sum(len(c.segments) for c in self.chapters)

    @property
    def characters(self) -> int:
        return sum(c.characters for c in self.chapters)

    @cached_property
    def needed(self) -> dict[str, str]:
        """Cache key -> text of every part this run must request (deduplicated)."""
        out: dict[str, str] = {}
        for ch in self.chapters:
            if ch.up_to_date:
                continue
            for seg, key, hit in zip(ch.segments, ch.keys, ch.cached, strict=True):
                if not hit:
                    out.setdefault(key, seg.text)
        return out

    @property
    def characters_to_send(self) -> int:
        return sum(len(t) for t in self.needed.values())

    @property
    def estimated_cost(self) -> float:
        return self.settings.estimated_cost(self.characters_to_send)

    def summary(self) -> dict[str, Any]:
        """The plan as data: what --dry-run --json prints and the report starts from."""
        s = self.settings
        return {
            "book": {
                "title": self.book.title,
                "author": self.book.author,
                "language": self.book.language,
                "source": str(self.book.source) if self.book.source else None,
            },
            "output": str(self.out_dir),
            "backend": s.backend,
            "endpoint": endpoint(s.base_url) if s.backend == "openai" else self.identity,
            "model": s.model,
            "voice": s.voice,
            "max_chars": s.max_chars,
            "chapters": [
                {
                    "index": c.chapter.index,
                    "title": c.chapter.title,
                    "file": c.filename,
                    "segments": len(c.segments),
                    "characters": c.characters,
                    "cached_segments": sum(c.cached),
                    "up_to_date": c.up_to_date,
                }
                for c in self.chapters
            ],
            "skipped": list(self.book.skipped),
            "segments": self.segments,
            "characters": self.characters,
            "cached_segments": sum(sum(c.cached) for c in self.chapters),
            "requests_needed": len(self.needed),
            "characters_to_send": self.characters_to_send,
            "estimated_cost_usd": round(self.estimated_cost, 4),
        }


def _chapter_fingerprint(plan_keys: Sequence[str], book: Book, chapter: Chapter, total: int, s: Settings) -> str:
    data = {
        "keys": list(plan_keys),
        "title": chapter.title,
        "track": [chapter.index, total],
        "album": book.title,
        "author": book.author,
        "language": book.language,
        "cover": hashlib.sha256(book.cover).hexdigest() if book.cover else None,
        "audio": [
            s.sample_rate,
            s.bitrate,
            s.sentence_pause_ms,
            s.paragraph_pause_ms,
            s.title_pause_ms,
            s.chapter_pad_ms,
            s.genre,
            s.subtitles,
        ],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def read_report(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan_book(book: Book, settings: Settings, out_dir: Path, cache: PartCache) -> BookPlan:
    """Chunk the book and look everything up; sends nothing."""
    if settings.backend == "local" and settings.language is None and book.language:
        settings = settings.replace(language=book.language)  # the offline voice follows the book's language
    identity = identity_for(settings)
    spec = settings.voice_spec
    previous = read_report(out_dir) or {}
    done_before = {
        c.get("file"): (c.get("fingerprint"), c.get("duration_s"))
        for c in previous.get("chapters", [])
        if isinstance(c, dict) and c.get("status") in ("done", "unchanged")
    }
    total = len(book.chapters)
    chapters = []
    for chapter in book.chapters:
        # Per paragraph until planning chooses packing per backend (the offline voice keeps this): packing changes
        # every part key, so turning it on re-pays each book synthesized before, once.
        segments = chunk_chapter(chapter, settings.max_chars, announce_title=settings.announce_titles, pack=False)
        keys = tuple(part_key(identity, spec, seg.text) for seg in segments)
        fingerprint = _chapter_fingerprint(keys, book, chapter, total, settings)
        filename = audio.chapter_filename(chapter.index, total, chapter.title)
        before, duration = done_before.get(filename, (None, None))
        up_to_date = before == fingerprint and (out_dir / filename).is_file()
        cached = tuple(cache.get(k, settings.part_format) is not None for k in keys)
        duration = float(duration) if up_to_date and isinstance(duration, (int, float)) else None
        chapters.append(ChapterPlan(chapter, segments, keys, cached, fingerprint, filename, up_to_date, duration))
    return BookPlan(book, settings, out_dir, identity, tuple(chapters))


# --------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class SegmentFailure:
    chapter: int
    chapter_title: str
    segment: int
    text: str  # the first words, so a person can find it
    error: str


@dataclass(frozen=True)
class ChapterOutcome:
    index: int
    title: str
    file: str
    status: str  # "done", "unchanged", "failed", "not started"
    segments: int
    characters: int
    duration_s: float | None
    fingerprint: str | None
    error: str | None = None


@dataclass(frozen=True)
class BookReport:
    status: str  # "done", "failed", "interrupted"
    plan: dict[str, Any]
    chapters: tuple[ChapterOutcome, ...]
    requests: int
    retries: int
    cache_hits: int
    synthesized: int
    characters_sent: int
    failures: tuple[SegmentFailure, ...]
    duration_s: float
    elapsed_s: float
    estimated_cost_usd: float
    started: str
    finished: str
    playlist: str | None = None
    m4b: str | None = None
    m4b_fingerprint: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def problem(self) -> str | None:
        """One line on what was not done, or None when everything was."""
        if self.status == "done":
            return None
        if self.error:
            return self.error
        if self.failures:
            f = self.failures[0]
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"chapter {f.chapter} ({f.chapter_title}) segment {f.segment} failed: {f.error}{more}"
        broken = [c for c in self.chapters if c.status not in ("done", "unchanged")]
        first = broken[0] if broken else None
        if first is not None and first.error:
            return f"chapter {first.index} ({first.title}) not written: {first.error}"
        return f"{len(broken)} chapter(s) not finished"


# ------------------------------------------------------------------------------------- mutable run state


@dataclass(eq=False)
class _ChapterState:
    plan: ChapterPlan
    missing: set[str]
    failed: list[SegmentFailure] = field(default_factory=list)
    outcome: ChapterOutcome | None = None
    audio: ChapterAudio | None = None


@dataclass(eq=False)
class _BookState:
    plan: BookPlan
    synth: Synthesizer
    chapters: list[_ChapterState]
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    synthesized: int = 0
    characters_sent: int = 0
    error: str | None = None  # set when a fatal error stopped this book
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Job:
    """One distinct part to request; ``book`` is the first book that needs it (its settings say how)."""

    book: _BookState
    key: str
    text: str

    @property
    def spec(self) -> VoiceSpec:
        return self.book.plan.settings.voice_spec

    @property
    def fmt(self) -> str:
        return self.book.plan.settings.part_format


_Waiting = dict[str, list[tuple[_BookState, _ChapterState]]]  # cache key -> the chapters that need that part
_AssemblyQueue = asyncio.Queue[tuple[_BookState, _ChapterState] | None]


# The book whose request is under way in this task; retry callbacks use it to count retries.
current_book: contextvars.ContextVar[_BookState | None] = contextvars.ContextVar("current_book", default=None)


def note_retry(event: Any) -> None:
    """Called by a synthesizer before each retry with an event that has ``wait`` and ``reason``."""
    state = current_book.get()
    if state is not None:
        state.retries += 1
        state.requests += 1
    log.info("retrying in %.1fs: %s", getattr(event, "wait", 0.0), getattr(event, "reason", "?"))


class Runner:
    def __init__(
        self,
        synth_for: Callable[[Settings], Synthesizer],
        cache: PartCache,
        *,
        concurrency: int,
        progress: Progress | None = None,
    ):
        self.synth_for = synth_for
        self.cache = cache
        self.concurrency = concurrency
        self.progress = progress or Progress(enabled=False)
        self.stop_reason: str | None = None  # set on Ctrl-C / SIGTERM
        self._abort_all: str | None = None  # set when the server refuses everything
        self._consecutive_failures = 0
        self._stop_event = asyncio.Event()  # set on a signal or an abort: workers take no new job
        self._workers: list[asyncio.Task[None]] = []
        self._stores: set[asyncio.Task[None]] = set()  # parts on their way to the cache
        self._waiting: _Waiting = {}
        self._assembly: _AssemblyQueue = asyncio.Queue()

    # -- public -----------------------------------------------------------------------------------------

    def run(self, plans: Sequence[BookPlan]) -> list[BookReport]:
        """Run to completion. Ctrl-C and SIGTERM stop scheduling and keep finished parts; the reports are
        written either way, and ``check_interrupted()`` then raises for the caller to exit 130."""
        return asyncio.run(self._main(plans))

    def check_interrupted(self) -> None:
        if self.stop_reason:
            raise Interrupted(f"interrupted by {self.stop_reason}; finished parts are cached, run again to resume")

    # -- internals --------------------------------------------------------------------------------------

    async def _main(self, plans: Sequence[BookPlan]) -> list[BookReport]:
        loop = asyncio.get_running_loop()
        # Parts are stored in threads (write + fsync); the default pool of cores + 4 threads would make stores
        # queue behind each other's fsync, so there is a thread per worker, plus one for assembly.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency + 2))
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not possible outside the main thread (or on Windows): Ctrl-C then raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._run_books(plans)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop_reason is None:
            # Requests in flight are already paid for: let them land in the cache, start no new ones.
            self.stop_reason = signal.Signals(sig).name
            log.warning(
                "%s received: finishing the requests in flight, then stopping (again to abort them)", self.stop_reason
            )
            self._stop_event.set()
        else:
            log.warning("%s received again: abandoning the requests in flight", signal.Signals(sig).name)
            for w in self._workers:
                w.cancel()

    async def _run_books(self, plans: Sequence[BookPlan]) -> list[BookReport]:
        synths: list[Synthesizer] = []
        states: list[_BookState] = []
        waiting, assembly = self._waiting, self._assembly
        jobs: asyncio.Queue[_Job] = asyncio.Queue()
        total_chars = done_chars = 0
        queued: set[str] = set()  # each distinct part is requested once, whichever books share it
        try:
            for plan in plans:
                _clean_partial_files(plan.out_dir)
                synth = self.synth_for(plan.settings)
                if synth not in synths:
                    synths.append(synth)
                state = _BookState(plan, synth, [])
                states.append(state)
                for cp in plan.chapters:
                    cs = _ChapterState(cp, set())
                    state.chapters.append(cs)
                    if cp.up_to_date:
                        cs.outcome = _outcome(cp, "unchanged", cp.previous_duration_s)
                        cs.audio = ChapterAudio(
                            cp.chapter, plan.out_dir / cp.filename, int((cs.outcome.duration_s or 0) * 1000)
                        )
                        continue
                    for seg, key in zip(cp.segments, cp.keys, strict=True):
                        # Looked up again, not taken from the plan: in a batch the plan may be minutes old.
                        if self.cache.get(key, plan.settings.part_format) is not None:
                            state.cache_hits += 1
                            total_chars += len(seg.text)
                            done_chars += len(seg.text)
                            continue
                        if key in cs.missing:
                            continue  # the same sentence twice in one chapter: one part serves both
                        total_chars += len(seg.text)
                        cs.missing.add(key)
                        waiting.setdefault(key, []).append((state, cs))
                        if key not in queued:
                            queued.add(key)
                            jobs.put_nowait(_Job(state, key, seg.text))
                    if not cs.missing:
                        assembly.put_nowait((state, cs))
            self.progress.start(total_chars, done_chars, jobs.qsize())
            assembler = asyncio.create_task(self._assembler())
            workers = [asyncio.create_task(self._worker(jobs)) for _ in range(self.concurrency)]
            self._workers = workers
            stop_waiter = asyncio.create_task(self._stop_event.wait())
            all_done = asyncio.gather(*workers, return_exceptions=True)
            pending: list[asyncio.Future[Any]] = [stop_waiter, all_done]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if self._abort_all:
                # The server refuses everything: requests in flight and their retries would fail the same way.
                for w in workers:
                    w.cancel()
            stop_waiter.cancel()
            for outcome in [*await all_done, *await asyncio.gather(*self._stores, return_exceptions=True)]:
                if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                    raise outcome
            assembly.put_nowait(None)
            await assembler
        finally:
            self.progress.close()
            for synth in synths:
                await synth.aclose()
        return [self._finish(state) for state in states]

    async def _worker(self, jobs: asyncio.Queue[_Job]) -> None:
        while not self._stop_event.is_set():
            try:
                job = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            book = job.book
            if self._abort_all or book.error:
                continue  # left undone; the report names it
            if self.cache.get(job.key, job.fmt) is None:
                current_book.set(book)
                try:
                    result = await book.synth.synthesize(job.text, job.spec)
                except FatalAPIError as exc:
                    book.requests += 1
                    self._fatal(book, exc)
                    continue
                except SynthesisError as exc:
                    book.requests += 1
                    self._failed(job, exc)
                    continue
                book.requests += 1  # earlier attempts were counted by note_retry as they happened
                book.synthesized += 1
                book.characters_sent += len(job.text)
                self._consecutive_failures = 0
                # Stored (write, fsync, rename) while this worker already sends its next request; the part
                # counts as done only once it is on disk, so an interruption never loses a stored part.
                store = asyncio.create_task(self._store(job, result.audio))
                self._stores.add(store)
                store.add_done_callback(self._stores.discard)
            else:
                book.cache_hits += 1
                self._arrived(job)

    async def _store(self, job: _Job, data: bytes) -> None:
        try:
            await asyncio.to_thread(self.cache.put, job.key, data, job.fmt)
        except OSError as exc:  # a full or read-only disk: every further request would be wasted
            self._abort(f"cannot store audio in the cache {self.cache.root}: {exc.strerror or exc}")
            return
        self._arrived(job)

    def _arrived(self, job: _Job) -> None:
        """A part is in the cache: every chapter that waited for it may now be complete."""
        self.progress.advance(len(job.text) * len(self._waiting.get(job.key, ())))
        for state, cs in self._waiting.pop(job.key, []):
            cs.missing.discard(job.key)
            if not cs.missing and not cs.failed and cs.outcome is None:
                self._assembly.put_nowait((state, cs))

    def _fatal(self, book: _BookState, exc: FatalAPIError) -> None:
        message = str(exc)
        if exc.status in GLOBAL_FATAL_STATUSES or "quota" in message.lower():
            self._abort(message)
        elif not book.error:
            book.error = message
            log.error("%s: stopping this book: %s", book.plan.book.title, message)

    def _failed(self, job: _Job, exc: SynthesisError) -> None:
        for _state, cs in self._waiting.get(job.key, []):
            seg_index = cs.plan.keys.index(job.key)
            failure = SegmentFailure(
                cs.plan.chapter.index, cs.plan.chapter.title, seg_index, _preview(job.text), str(exc)
            )
            cs.failed.append(failure)
            log.error("chapter %d segment %d failed: %s", failure.chapter, failure.segment, failure.error)
        self._consecutive_failures += 1
        if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self._abort(f"{self._consecutive_failures} segments in a row failed after retries; last: {exc}")

    def _abort(self, message: str) -> None:
        """Stop the whole run: whatever is left would fail the same way."""
        if not self._abort_all:
            self._abort_all = message
            self._stop_event.set()
            log.error("stopping: %s", message)

    async def _assembler(self) -> None:
        while (item := await self._assembly.get()) is not None:
            state, cs = item
            if self.stop_reason:
                continue  # interrupted: the parts are cached, the next run assembles this chapter
            cp = cs.plan
            parts = [self.cache.path(k, state.plan.settings.part_format) for k in cp.keys]
            try:
                result = await asyncio.to_thread(
                    audio.assemble_chapter,
                    state.plan.book,
                    cp.chapter,
                    cp.segments,
                    parts,
                    state.plan.out_dir,
                    state.plan.settings,
                    total_chapters=len(state.plan.chapters),
                )
            except OSError as exc:  # the output folder is full or was removed under us
                cs.outcome = _outcome(cp, "failed", None, f"cannot write {cp.filename}: {exc.strerror or exc}")
                log.error("chapter %d (%s) not written: %s", cp.chapter.index, cp.chapter.title, cs.outcome.error)
                continue
            except AudioError as exc:
                note = ""
                if isinstance(exc, audio.PartDecodeError):
                    # A damaged part must not be a cache hit forever: drop it so the next run asks again.
                    exc.part.unlink(missing_ok=True)
                    note = "; the damaged part was dropped from the cache, run again to fetch it"
                cs.outcome = _outcome(cp, "failed", None, f"{exc}{note}")
                log.error("chapter %d (%s) not written: %s%s", cp.chapter.index, cp.chapter.title, exc, note)
                continue
            cs.audio = result
            cs.outcome = _outcome(cp, "done", result.duration_ms / 1000)
            self.progress.note(f"wrote {result.path.name} ({_clock(result.duration_ms / 1000)})")

    def _m4b(self, plan: BookPlan, audios: Sequence[ChapterAudio], fingerprint: str) -> str:
        """Build the M4B unless the one an earlier run built from the same chapters is still there."""
        name = audio.book_stem(plan.book) + ".m4b"
        previous = read_report(plan.out_dir) or {}
        current = previous.get("m4b") == name and previous.get("m4b_fingerprint") == fingerprint
        if current and (plan.out_dir / name).is_file():
            return name
        self.progress.note(f"building {name} …")
        built = audio.build_m4b(plan.out_dir, plan.book, audios, plan.settings)
        self.progress.note(f"wrote {built.name}")
        return built.name

    def _finish(self, state: _BookState) -> BookReport:
        plan = state.plan
        chapters: list[ChapterOutcome] = []
        failures: list[SegmentFailure] = []
        for cs in state.chapters:
            failures.extend(cs.failed)
            if cs.outcome is not None:
                chapters.append(cs.outcome)
            elif cs.failed:
                chapters.append(_outcome(cs.plan, "failed", None, cs.failed[0].error))
            else:
                chapters.append(_outcome(cs.plan, "not started", None))
        complete = all(c.status in ("done", "unchanged") for c in chapters)
        error = state.error or self._abort_all
        status = "done" if complete else ("interrupted" if self.stop_reason else "failed")
        if status != "done" and error is None and self.stop_reason:
            error = f"interrupted by {self.stop_reason}"
        playlist = m4b = m4b_fingerprint = None
        audios = [cs.audio for cs in state.chapters if cs.audio is not None]
        if complete:
            # Only a complete book gets a playlist and an M4B: a partial one must not look finished.
            try:
                playlist = audio.write_playlist(plan.out_dir, plan.book, audios).name
                if plan.settings.m4b:
                    m4b_fingerprint = _m4b_fingerprint(plan, chapters)
                    m4b = self._m4b(plan, audios, m4b_fingerprint)
            except AudioError as exc:
                status, error = "failed", str(exc)
            keep = {c.file for c in chapters} | {playlist, m4b}
            if plan.settings.subtitles:
                keep |= {str(Path(c.file).with_suffix("." + plan.settings.subtitles)) for c in chapters}
            _remove_stale_outputs(plan.out_dir, keep, {c.file for c in chapters})
        summary = plan.summary()
        now = time.time()
        report = BookReport(
            status=status,
            plan=summary,
            chapters=tuple(chapters),
            requests=state.requests,
            retries=state.retries,
            cache_hits=state.cache_hits,
            synthesized=state.synthesized,
            characters_sent=state.characters_sent,
            failures=tuple(failures),
            duration_s=round(sum(c.duration_s or 0 for c in chapters), 3),
            elapsed_s=round(now - state.started, 3),
            estimated_cost_usd=round(plan.settings.estimated_cost(state.characters_sent), 4),
            started=_iso(state.started),
            finished=_iso(now),
            playlist=playlist,
            m4b=m4b,
            m4b_fingerprint=m4b_fingerprint,
            error=error,
        )
        write_report(plan.out_dir, report)
        return report


def write_report(out_dir: Path, report: BookReport) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / REPORT_NAME
    tmp = dest.with_name(REPORT_NAME + ".part")
    tmp.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, dest)
    return dest


def prepare_output(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output path {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".audiobook-write-test.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") from None


def _clean_partial_files(out_dir: Path) -> None:
    """A killed run may leave `*.part` files; they never count as output."""
    if out_dir.is_dir():
        for p in out_dir.glob("*.part"):
            p.unlink(missing_ok=True)


def _m4b_fingerprint(plan: BookPlan, chapters: Sequence[ChapterOutcome]) -> str:
    data = [[c.file, c.fingerprint] for c in chapters] + [plan.settings.genre, plan.settings.sample_rate]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()  # chapter fingerprints cover tags and cover


def _remove_stale_outputs(out_dir: Path, keep: set[str | None], current_chapters: set[str]) -> None:
    """Delete what an earlier run of this book wrote that no longer matches it: chapters that are gone (the book
    changed), subtitles in a format no longer asked for, an old playlist or M4B. Only names this program wrote
    (listed in the previous report, or a current chapter's subtitle siblings) are ever touched."""
    previous = read_report(out_dir) or {}
    names: set[Any] = set(current_chapters)
    names |= {c.get("file") for c in previous.get("chapters", []) if isinstance(c, dict)}
    names |= {previous.get("playlist"), previous.get("m4b")}
    candidates: set[str] = set()
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            continue
        candidates.add(name)
        if name.endswith(".mp3"):
            candidates |= {name[:-4] + ".srt", name[:-4] + ".vtt"}
    for name in candidates - {k for k in keep if k}:
        (out_dir / name).unlink(missing_ok=True)


def _outcome(cp: ChapterPlan, status: str, duration: float | None, error: str | None = None) -> ChapterOutcome:
    return ChapterOutcome(
        index=cp.chapter.index,
        title=cp.chapter.title,
        file=cp.filename,
        status=status,
        segments=len(cp.segments),
        characters=cp.characters,
        duration_s=round(duration, 3) if duration is not None else None,
        fingerprint=cp.fingerprint if status in ("done", "unchanged") else None,
        error=error,
    )


def _preview(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "") if parts else text[:40]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
