"""The web page's jobs, run one after another on a thread of their own through ``pipeline.app`` (read, plan,
convert), on whichever engine the server's settings name. Each job's progress is kept as the page is sent it
(``Live``): per chapter the parts made, retries, parts made again by verification and errors; the rate the
run reaches and whether the key's rate limit holds it back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline import app
from pipeline.config import load_settings
from pipeline.errors import AudiobookError
from pipeline.limits import answered_in
from pipeline.models import Book
from pipeline.progress import ChapterEvent, Progress
from pipeline.report import BookStatus
from pipeline.web import store as jobs
from pipeline.web.store import JobStore

log = logging.getLogger("audiobook")

WATCH_S = 0.25  # how often the rate limit's word is looked at during a run
LOG_LINES = 200  # the last warnings and notes a job's page shows
CANCEL = "a cancel from the web page"


def read_source(source: str, settings: Any) -> Book:
    """The book at an upload's path, or at a URL: the string goes to ``app.read`` as given (URLs are read once
    ``app.read`` takes them; until then its one-line error is what the page shows)."""
    reader: Callable[..., Book] = app.read
    return reader(source if source.startswith(("http://", "https://")) else Path(source), settings)


class Live:
    """One job's progress, written by the run's thread, read by the server's (every access under the lock)."""

    def __init__(self, status: str, plan: dict[str, Any], previous: dict[str, Any] | None = None):
        self._lock = threading.Lock()
        self.status = status
        self.error: str | None = None
        self.requests_total = self.requests_done = 0
        self.chars_total = self.chars_done = 0
        self.rate = ""
        self.held: str | None = None
        self.held_times = 0
        self.log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._answers: collections.deque[float] = collections.deque()
        self._started = time.monotonic()
        self.chapters: dict[int, dict[str, Any]] = {}
        for c in plan["chapters"]:
            done = bool(c["up_to_date"])
            self.chapters[c["index"]] = {
                "index": c["index"], "title": c["title"], "file": c["file"], "parts": 0, "done": 0, "retries": 0,
                "remade": 0, "errors": [], "written": done,
            }  # fmt: skip
        if previous:  # a job that ran before (cancelled, interrupted): the chapters it wrote are still written
            for c in previous.get("chapters", []):
                if c.get("written") and c["index"] in self.chapters:
                    self.chapters[c["index"]]["written"] = True
            self.log.extend(previous.get("log", []))

    def started(self, chars_total: int, chars_done: int, requests: int) -> None:
        with self._lock:
            self.chars_total, self.chars_done, self.requests_total = chars_total, chars_done, requests
            self.requests_done = 0
            self._started = time.monotonic()

    def advanced(self, chars: int) -> None:
        with self._lock:
            self.chars_done += chars
            self.requests_done += 1
            self._answers.append(time.monotonic())

    def watched(self, held: str | None) -> None:
        with self._lock:
            now = time.monotonic()
            while self._answers and self._answers[0] < now - 60:
                self._answers.popleft()
            self.rate = answered_in(len(self._answers), min(60.0, now - self._started))
            if held is not None and self.held is None:
                self.held_times += 1
                self.log.append(f"held by the rate limit: {held}")
            self.held = held

    def chapter(self, event: ChapterEvent) -> None:
        with self._lock:
            c = self.chapters.get(event.chapter)
            if c is None:
                return
            if event.kind == "waiting":
                c["parts"], c["done"] = event.count, 0
            elif event.kind == "part":
                c["done"] += event.count
            elif event.kind == "retry":
                c["retries"] += event.count
            elif event.kind == "remade":
                c["remade"] += event.count
            elif event.kind in ("failed", "not written"):
                c["errors"].append(event.detail)
            elif event.kind == "written":
                c["written"] = True
                self.log.append(f"chapter {event.chapter} written: {c['title']}")

    def note(self, line: str) -> None:
        with self._lock:
            self.log.append(line)

    def end(self, status: str, error: str | None) -> None:
        with self._lock:
            self.status, self.error, self.held = status, error, None
            if status in jobs.FINISHED:
                self.chars_done = self.chars_total

    def begin(self, status: str) -> None:
        with self._lock:
            self.status, self.error = status, None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total = self.chars_total
            percent = 100 if self.status in jobs.FINISHED else (int(100 * self.chars_done / total) if total else 0)
            return {
                "status": self.status,
                "error": self.error,
                "percent": percent,
                "requests_done": self.requests_done,
                "requests_total": self.requests_total,
                "rate": self.rate,
                "held": self.held,
                "held_times": self.held_times,
                "chapters": [dict(c, errors=list(c["errors"])) for c in self.chapters.values()],
                "log": list(self.log),
            }


class WebProgress(Progress):
    """The run's progress, into a job's ``Live`` instead of a terminal."""

    def __init__(self, live: Live, on_written: Callable[[], None] = lambda: None):
        super().__init__(enabled=False)
        self.live = live
        self.on_written = on_written  # a chapter is written: worth keeping, should the server die
        self._watch: asyncio.Task[None] | None = None

    def start(self, total_chars: int, done_chars: int, requests: int) -> None:
        super().start(total_chars, done_chars, requests)
        self.live.started(total_chars, done_chars, requests)
        with contextlib.suppress(RuntimeError):
            self._watch = asyncio.get_running_loop().create_task(self._watching())

    async def _watching(self) -> None:
        while True:
            self.live.watched(self.rate())
            await asyncio.sleep(WATCH_S)

    def advance(self, chars: int) -> None:
        super().advance(chars)
        self.live.advanced(chars)

    def chapter(self, event: ChapterEvent) -> None:
        self.live.chapter(event)
        if event.kind == "written":
            self.on_written()

    def note(self, message: str) -> None:
        self.live.note(message)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().close()


class _ToLive(logging.Handler):
    """The run's warnings and errors, in its own words, into the job's log on the page."""

    def __init__(self, live: Live):
        super().__init__(logging.WARNING)
        self.live = live

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.live.note(record.getMessage())


class JobRunner:
    """Runs queued jobs one at a time (they share the key's rate limit and the machine) on a thread."""

    def __init__(self, store: JobStore, data: Path, config: Path | None, env: Mapping[str, str] | None):
        self.store, self.data, self.config, self.env = store, data, config, env
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._live: dict[str, Live] = {}
        self._current: tuple[str, WebProgress] | None = None
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="audiobook-web-jobs", daemon=True)
        self._thread.start()

    def out_dir(self, job_id: str) -> Path:
        return self.data / "books" / job_id

    def live(self, job: jobs.Job) -> Live:
        with self._lock:
            if job.id not in self._live:  # first seen by this server: as the store has it
                self._live[job.id] = Live(job.status, job.plan, job.progress)
                self._live[job.id].error = job.error
            return self._live[job.id]

    def start(self, job: jobs.Job) -> None:
        """Queue a planned job, or resume one that stopped: parts already kept are not asked for again."""
        self.store.set_status(job.id, jobs.QUEUED)
        with self._lock:
            self._cancelled.discard(job.id)
            self._live[job.id] = Live(jobs.QUEUED, job.plan, job.progress)
        self._queue.put(job.id)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)
            current = self._current
        if current is not None and current[0] == job_id:
            current[1].interrupt(CANCEL)  # the requests in flight land; the rest stay unasked
        else:
            job = self.store.get(job_id)
            if job is not None and job.status == jobs.QUEUED:
                self.store.set_status(job_id, jobs.CANCELLED, "cancelled before it started")
                self.live(job).end(jobs.CANCELLED, "cancelled before it started")

    def shutdown(self, timeout: float = 30.0) -> None:
        """The server is stopping: the running job is interrupted (resumable), the thread ends."""
        with self._lock:
            current = self._current
        if current is not None:
            current[1].interrupt("the server stopping")
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            job = self.store.get(job_id)
            if job is None or job.status != jobs.QUEUED:
                continue  # cancelled while it waited
            try:
                self._run(job)
            except Exception as exc:  # a bug must not end the thread every later job waits on
                log.exception("web job %s", job_id)
                self._end(job, jobs.FAILED, f"unexpected error: {exc}")

    def _run(self, job: jobs.Job) -> None:
        live = self.live(job)
        live.begin(jobs.RUNNING)
        self.store.set_status(job.id, jobs.RUNNING)
        progress = WebProgress(live, on_written=lambda: self.store.set_progress(job.id, live.snapshot()))
        with self._lock:
            self._current = (job.id, progress)
        handler = _ToLive(live)
        logging.getLogger("audiobook").addHandler(handler)
        try:
            settings = load_settings(self.config, env=self.env, overrides=job.overrides)
            book = read_source(job.source, settings.book)
            plan = app.plan(book, settings, self.out_dir(job.id))
            result = app.convert([plan], settings.run, progress=progress, env=self.env)
        except AudiobookError as exc:
            self._end(job, jobs.FAILED, str(exc))
            return
        finally:
            logging.getLogger("audiobook").removeHandler(handler)
            with self._lock:
                self._current = None
        (report,) = result.reports
        if result.interrupted:
            cancelled = result.interrupted == CANCEL
            status = jobs.CANCELLED if cancelled else jobs.INTERRUPTED
            error = "cancelled; finished parts are kept, resume to continue" if cancelled else (
                f"interrupted by {result.interrupted}; resume to continue"
            )  # fmt: skip
        elif report.status == BookStatus.DONE:
            status, error = jobs.DONE, None
        elif report.status == BookStatus.UNVERIFIED:
            status, error = jobs.UNVERIFIED, report.problem()
        else:
            status, error = jobs.FAILED, report.problem() or report.error or "the run failed"
        self._end(job, status, error)

    def _end(self, job: jobs.Job, status: str, error: str | None) -> None:
        live = self.live(job)
        self.store.set_status(job.id, status, error)
        live.end(status, error)
        if error:
            live.note(error)
        self.store.set_progress(job.id, live.snapshot())

    def snapshot(self, job: jobs.Job) -> dict[str, Any]:
        return self.live(job).snapshot()
