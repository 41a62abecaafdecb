"""The distributed executor: the same units of work (part requests, chapters, books to finish) as Celery tasks
on a Redis broker, run by ``audiobook worker`` processes on any machine that sees the same parts store and
output folder (a shared disk, or s3:// for parts).

What it guarantees, and how:

- **A part is paid for once.** A worker looks in the store first; if the part is not there, a lease in Redis
  (SET NX with an expiry, renewed while the request runs) names the one worker that requests it; any other that
  wants it waits for it to land. A worker that dies stops renewing, the lease lapses, another takes over.
- **Crashes lose nothing.** Tasks are acknowledged late: a task whose worker is killed stays unacknowledged in
  Redis and is given to another worker after ``redelivery_s``. A task redelivered while its first run is
  alive finds the lease (or the part) and waits: running twice never pays twice.
- **No secret in the broker.** Messages are JSON of plain values: a backend names the variable that holds its
  key, never the key; workers read keys from their own environment. Leases and the shared rate budget are keyed
  by the endpoint and a hash of the key.

Worker processes run tasks in threads (Celery's thread pool) and keep one asyncio loop for all speech
requests, so HTTP connections and the rate governor are shared by every task of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from celery import Celery
from celery.result import AsyncResult
from celery.signals import worker_ready

from pipeline import jobs
from pipeline.config import RunOptions, limits_file, load_settings
from pipeline.engines import Interruptible, failure
from pipeline.errors import SynthesisError, UsageError
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.models import ErrorKind, PartRequest, PartResult, PartStatus, RateNote, SpeechResult
from pipeline.outputs import FinishJob
from pipeline.store import Stores
from pipeline.wire import decode, encode

log = logging.getLogger("audiobook")
T = TypeVar("T")

POLL_S = 0.1  # how often a worker looks for a part another is making, and the driver for a chapter or book
RESULTS_POLL_S = 0.01  # how often the driver looks for finished part requests (one MGET for all of them)
DONE_TTL_S = 3600  # how long a finished chapter or book answers a late redelivery of its task


def make_app(broker: str | None = None, redelivery_s: float = 300.0) -> Celery:
    """A Celery app on ``broker`` (Redis also keeps the results). A task whose worker died is given to another
    after ``redelivery_s`` (Redis' visibility timeout), looked for every quarter of that time. Each driver has
    an app of its own (Celery keeps connections per app: a process that drives two runs on two brokers must
    not keep talking to the first), and sends tasks by name; the workers' app below holds the tasks."""
    made = Celery("audiobook", set_as_current=False)
    made.conf.update(
        task_serializer="json",  # never pickle: whoever can write to the broker must not run code on workers
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,  # a task is acknowledged when it is done, so a dead worker's task is redone
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker takes one task per free thread, never a stock of them
        result_expires=7 * 86400,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    if broker is not None:
        made.conf.update(_on_broker(broker, redelivery_s))
    return made


def _on_broker(broker: str, redelivery_s: float) -> dict[str, Any]:
    return {
        "broker_url": broker,
        "result_backend": broker,
        "broker_transport_options": {
            "visibility_timeout": redelivery_s,
            "unacked_restore_interval": max(1, int(redelivery_s / 4)),
            "unacked_restore_throttle": 1,
        },
    }


app = make_app()  # the workers': configured by run_worker, from the worker's command line


# ------------------------------------------------------------------------------------------- the workers


class _Worker:
    """What a worker process keeps for all its tasks: one event loop in a thread, the synthesizers (and their
    connections), the stores, and the Redis client for leases."""

    def __init__(self) -> None:
        import redis

        from pipeline.limits_redis import RedisLimits, connect
        from pipeline.tts.registry import Synthesizers

        self.run = _options or load_settings().run
        self.name = _node()
        self.redis = redis.Redis.from_url(app.conf.broker_url)
        self.stores = Stores()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="speech-loop", daemon=True).start()
        # One rate budget per key for every worker: the governors' state lives in the broker's Redis.
        limits_client = connect(app.conf.broker_url)
        self.synths = Synthesizers(
            self.run.concurrency,
            memory=limits_file(),  # each task names its store; the worker's own cache folder keeps this
            shared=lambda where: RedisLimits(limits_client, where),
        )
        self.lease_s = min(60.0, max(2.0, self.run.redelivery_s / 2))
        self._held: dict[str, str] = {}  # lease key -> our token, renewed together by one thread
        self._held_lock = threading.Lock()
        threading.Thread(target=self._renew, name="leases", daemon=True).start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[bool]:
        """Hold ``name`` while the block runs, renewing it; yields False (holding nothing) if another has it."""
        key = f"audiobook:lease:{name}"
        token = f"{self.name}:{uuid.uuid4().hex}"
        if not self.redis.set(key, token, nx=True, px=int(self.lease_s * 1000)):
            yield False
            return
        with self._held_lock:
            self._held[key] = token
        try:
            yield True
        finally:
            with self._held_lock:
                del self._held[key]
            # Delete it only if it is still ours (it may have lapsed and been taken by another meanwhile).
            self.redis.eval(_RELEASE, 1, key, token)

    def _renew(self) -> None:
        """Every third of a lease's life, extend every lease this process holds (one round trip for all). A
        process that dies or hangs stops renewing; its leases lapse and another worker takes the work over."""
        while True:
            time.sleep(self.lease_s / 3)
            with self._held_lock:
                held = list(self._held)
            if not held:
                continue
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for key in held:
                        pipe.pexpire(key, int(self.lease_s * 1000))
                    pipe.execute()
            except Exception as exc:  # Redis away for a moment: the next round tries again
                log.warning("could not renew %d leases in Redis: %s", len(held), exc)

    def once(self, task_id: str, kind: str, job: dict[str, Any], work: Callable[[], Any]) -> Any:
        """Run ``work`` for ``job`` once: a redelivery of a task that another worker is still doing (it outlived
        the visibility timeout) waits for it and returns its result, and one that comes after it finished gets
        that result, so an M4B is never encoded twice at once, nor again once it is done. Two tasks for the same
        job (two runs at once) take turns."""
        name = f"{kind}:{hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()}"
        done_key = f"audiobook:done:{task_id}"
        while True:
            if (done := self.redis.get(done_key)) is not None:
                return json.loads(done)
            with self.lease(name) as mine:
                if mine:
                    result = work()
                    self.redis.set(done_key, json.dumps(result), ex=DONE_TTL_S)
                    return result
            time.sleep(POLL_S)

    def make_part(self, request: PartRequest) -> PartResult:
        store = self.stores.at(request.store)
        where = hashlib.sha256(store.location.encode()).hexdigest()[:16]
        while True:
            if store.has(request.key, request.fmt):
                return PartResult(request.key, PartStatus.CACHED)
            with self.lease(f"part:{where}:{request.key}") as mine:
                if mine:
                    if store.has(request.key, request.fmt):  # it landed between the look and the lease
                        return PartResult(request.key, PartStatus.CACHED)
                    return self._request(request, store)
            time.sleep(POLL_S)  # another worker is making it: wait for it to land, or for its lease to lapse

    async def _speak(self, request: PartRequest) -> tuple[SpeechResult, RateNote]:
        """The speech, and what this process's governor for its key knew then (read on the loop that changes
        it): the driver has no governor of its own to show or report."""
        speech = await self.synths(request.backend).synthesize(request.text, request.spec)
        stats = self.synths.governor(request.backend).stats()
        return speech, RateNote(stats.limit_rpm, stats.limit_source, stats.throttled)

    def _request(self, request: PartRequest, store: Any) -> PartResult:
        try:
            speech, note = self.call(self._speak(request))
        except UsageError as exc:  # no key on this worker for that backend: every request of it would fail
            return PartResult(request.key, PartStatus.REFUSED, error=f"on worker {self.name}: {exc}",
                              error_kind=ErrorKind.AUTH)  # fmt: skip
        except SynthesisError as exc:
            failed = failure(request, exc)  # which machine said it: its key, its network, its server
            return dataclasses.replace(failed, error=f"{failed.error} (on worker {self.name})")
        done = PartResult(request.key, PartStatus.STORED, speech.attempts, len(request.text), None, None,
                          speech.rate_limited, speech.waited_s, note)  # fmt: skip
        try:
            store.put(request.key, speech.audio, request.fmt)
        except OSError as exc:
            error = f"cannot store audio in the cache {store.location} on {self.name}: {exc.strerror or exc}"
            return PartResult(request.key, PartStatus.FAILED, done.attempts, done.characters, error, ErrorKind.STORE)
        return done


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_options: RunOptions | None = None  # the worker's own run options (from its command line), once started
_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _this_worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


@app.task(name="audiobook.part")
def part_task(request: dict[str, Any]) -> Any:
    return encode(_this_worker().make_part(decode(PartRequest, request)))


@app.task(name="audiobook.chapter", bind=True)
def chapter_task(task: Any, job: dict[str, Any]) -> Any:
    worker = _this_worker()
    return worker.once(
        task.request.id, "chapter", job, lambda: encode(jobs.assemble(decode(ChapterJob, job), worker.stores))
    )


@app.task(name="audiobook.finish", bind=True)
def finish_task(task: Any, job: dict[str, Any]) -> Any:
    def finish() -> Any:
        return encode(jobs.finish(decode(FinishJob, job), lambda message: log.info("%s", message)))

    return _this_worker().once(task.request.id, "finish", job, finish)


def run_worker(run: RunOptions, *, verbose: bool = False) -> None:
    """``audiobook worker``: serve tasks until stopped, ``run.concurrency`` at a time (in threads). Celery's
    own banner and a line per task only with ``verbose``; this project's log (retries, failures) always."""
    global _options
    if not run.broker:
        raise UsageError("a worker needs a broker: --broker redis://HOST:6379/0 (or AUDIOBOOK_BROKER)")
    _options = run
    app.conf.update(_on_broker(run.broker, run.redelivery_s))

    @worker_ready.connect(weak=False)
    def ready(**_: Any) -> None:
        log.info("worker %s ready: %d at a time, broker %s", _node(), run.concurrency, _safe(run.broker or ""))

    app.worker_main(
        [*([] if verbose else ["--quiet"]), "worker", "--pool", "threads", "--concurrency", str(run.concurrency),
         "--without-gossip", "--without-mingle", "--hostname", f"audiobook@{_node()}",
         "--loglevel", "INFO" if verbose else "WARNING"]
    )  # fmt: skip


def _node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------------------- the driver


class CeleryExecutor(Interruptible):
    """Submits the run's work as tasks and turns their results back into the run's values.

    At most ``window`` part requests are outstanding (queued or running), so what is not yet sent can still be
    held back (a book that stopped). The workers' own concurrency decides how many are in flight at the speech
    server; the window is twice the run's concurrency, so that with ``--concurrency`` set to the workers' total
    a worker that finishes a request always finds the next one queued."""

    def __init__(self, run: RunOptions):
        super().__init__()
        if not run.broker:
            raise UsageError("--engine celery needs a broker: --broker redis://HOST:6379/0 (or AUDIOBOOK_BROKER)")
        self.app = make_app(run.broker, run.redelivery_s)
        self.window = 2 * run.concurrency
        self._outstanding: dict[str, tuple[AsyncResult, PartRequest]] = {}

    # Chapters and books are spread over the workers as they come.
    assembly_slots = 64

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        await asyncio.to_thread(self._check_broker)
        exhausted = False
        while True:
            while not exhausted and not self._stopping.is_set() and len(self._outstanding) < self.window:
                request = next(requests, None)
                if request is None:
                    exhausted = True
                    break
                sent = self.app.send_task("audiobook.part", args=[encode(request)])
                self._outstanding[sent.id] = (sent, request)
            if not self._outstanding and (exhausted or self._stopping.is_set()):
                return
            for result, request in await asyncio.to_thread(self._finished):
                on_result(result if isinstance(result, PartResult) else _crashed(request, result))
            await asyncio.sleep(RESULTS_POLL_S)

    def _finished(self) -> list[tuple[PartResult | BaseException, PartRequest]]:
        """The part requests done since the last look: one MGET of every outstanding result (Celery's
        ``get_many``, one pass, no wait)."""
        out = []
        backend = self.app.backend
        for task_id, meta in list(backend.get_many(list(self._outstanding), interval=0, max_iterations=1)):
            _sent, request = self._outstanding.pop(task_id)
            backend.forget(task_id)
            value = meta["result"]
            ok = meta["status"] == "SUCCESS"
            out.append((decode(PartResult, value) if ok else _as_error(value), request))
        return out

    def _check_broker(self) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
        except Exception as exc:  # kombu raises its own OperationalError
            raise UsageError(f"cannot reach the broker at {_safe(self.app.conf.broker_url)}: {exc}") from None

    def _abandon(self) -> None:
        self._outstanding.clear()  # stop waiting; the workers finish them anyway, into the store

    async def assemble(self, job: ChapterJob) -> ChapterDone:
        value = await self._wait(self.app.send_task("audiobook.chapter", args=[encode(job)]))
        if isinstance(value, BaseException):
            return ChapterDone(None, f"assembly failed on a worker: {value}")
        return decode(ChapterDone, value)

    async def finish(self, job: FinishJob, note: Callable[[str], None]) -> FinishDone:
        if job.options.m4b:
            note(f"building the M4B of {job.book.title} on a worker …")
        value = await self._wait(self.app.send_task("audiobook.finish", args=[encode(job)]))
        if isinstance(value, BaseException):
            return FinishDone(None, f"finishing the book failed on a worker: {value}")
        return decode(FinishDone, value)

    async def _wait(self, sent: AsyncResult) -> Any:
        while not await asyncio.to_thread(sent.ready):
            await asyncio.sleep(POLL_S)
        value = sent.get(propagate=False)
        sent.forget()
        return value


def _as_error(value: Any) -> BaseException:
    return value if isinstance(value, BaseException) else RuntimeError(str(value))


def _crashed(request: PartRequest, exc: BaseException) -> PartResult:
    """A task that raised (a bug, or a worker that could not start): the part failed, the next run retries."""
    return PartResult(request.key, PartStatus.FAILED, error=f"a worker failed on it: {type(exc).__name__}: {exc}")


def _safe(url: str) -> str:
    """A broker URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
