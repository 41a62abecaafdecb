"""The distributed executor: the same units of work (part requests, chapters, books to finish) as Celery tasks
on a Redis broker, run by ``audiobook worker`` processes on any machine that sees the same parts store and
output folder (a shared disk, or s3:// for parts).

What it guarantees, and how:

- **A part is paid for once.** A worker looks in the store first; if the part is not there, a lease in Redis
  (SET NX with an expiry, renewed while the request runs) names the one worker that requests it; any other that
  wants it waits for it to land. A worker that dies stops renewing, the lease lapses, another takes over.
- **Crashes lose nothing, and stall nothing.** Every worker says every second that it is alive and which tasks
  it holds (a key in Redis that lapses after ``ALIVE_S``). The driver looks at them, and at the queue, every
  second: a task whose worker stopped saying so is sent again at once, one that is nowhere for ``LOST_S`` (a
  Redis that came back empty) too; running twice never pays twice (the lease, the store). Tasks are also
  acknowledged late, so Redis itself gives a dead worker's task to another after ``redelivery_s``: the safety
  net.
- **A stopped run leaves nothing behind.** On a stop the driver takes back what no worker has taken yet (from
  the queue, and from a dead worker's unacknowledged tasks), so a worker started later never runs work for a
  run that is gone; and it says when no worker has taken its work for a while.
- **A worker serves what it can.** One whose key is missing or refused for an endpoint puts that work back for
  the others and says so in its heartbeat; the run fails on it, naming the workers, only when none can.
- **Redis may go away.** The driver says so in one line and goes on when it is back; tasks it lost are sent
  again. Workers wait for it.
- **No secret in the broker.** Messages are JSON of plain values: a backend names the variable that holds its
  key, never the key; workers read keys from their own environment. Leases and the shared rate budget are keyed
  by the endpoint and a hash of the key.

Worker processes run tasks in threads (Celery's thread pool) and keep one asyncio loop for all speech
requests, so HTTP connections and the rate governor are shared by every task of the process. A worker has
twice as many threads as requests at once (``--concurrency``): a part being stored (write, fsync) or reported
never holds a request's place, as in the local engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import kombu.exceptions
import redis
from celery import Celery
from celery.exceptions import Ignore
from celery.result import AsyncResult
from celery.signals import task_postrun, task_received, worker_ready

from pipeline import jobs
from pipeline.config import RunOptions, limits_file, load_settings
from pipeline.engines import Interruptible, Made, keep_part, make_part
from pipeline.errors import UsageError
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.models import BackendOptions, ErrorKind, PartRequest, PartResult, PartStatus, RateNote
from pipeline.outputs import FinishJob
from pipeline.store import Stores
from pipeline.tts.registry import backend_for
from pipeline.wire import decode, encode

log = logging.getLogger("audiobook")
T = TypeVar("T")

POLL_S = 0.1  # how often a worker looks for a part another is making, and the driver for a chapter or book
RESULTS_POLL_S = 0.01  # how often the driver looks for finished part requests (one MGET for all of them)
DONE_TTL_S = 3600  # how long a finished chapter or book answers a late redelivery of its task
HEARTBEAT_S = 1.0  # how often a worker says it is alive and which tasks it holds
ALIVE_S = 6.0  # a worker not heard of for this long is gone: the driver sends its tasks again
WATCH_S = 1.0  # how often the driver looks at the workers and the queue
LOST_S = 10.0  # a task in no queue, held by no worker and without a result this long is lost: sent again
PATIENCE_S = 60.0  # the driver says so when no worker has taken its work for this long
PATIENCE_ENV = "AUDIOBOOK_WORKER_PATIENCE_S"
REFUSE_PAUSE_S = 1.0  # a worker thread that put back a task it cannot serve rests this long (not to take it again)
REDIS_PATIENCE_S = 600.0  # a worker's task waits this long for Redis to come back before it fails
VOID_S = 7 * 86400  # how long a task taken back stays void (a worker that had it in hand drops it)
WORKERS = "audiobook:workers"  # the names of the workers that said they are alive
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's keys for tasks that workers hold (its defaults)
# Redis unreachable, restarting (loading) or timing out: the broker is away, not the run broken.
BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError)


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
    connections), the stores, and the Redis client for leases and the heartbeat."""

    def __init__(self) -> None:
        from pipeline.limits_redis import RedisLimits, connect
        from pipeline.tts.registry import Synthesizers

        self.run = _options or load_settings().run
        self.name = _node()
        # Timeouts: a Redis that stops answering (not only one that is gone) must not hang a task or the heartbeat.
        self.redis = redis.Redis.from_url(app.conf.broker_url, socket_timeout=10, socket_connect_timeout=5)
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
        # Twice as many task threads as requests: these keep the requests to --concurrency, and assemblies too.
        # Requests wait for their turn on the loop, so one that ends starts the next without a thread switch.
        self._speaking = asyncio.Semaphore(self.run.concurrency)
        self._assembling = threading.BoundedSemaphore(self.run.concurrency)
        self.lease_s = min(ALIVE_S, max(2.0, self.run.redelivery_s / 2))
        self._leases: dict[str, str] = {}  # lease key -> our token, renewed together by one thread
        self._leases_lock = threading.Lock()
        self._tasks: collections.Counter[str] = collections.Counter()  # ids in hand (a copy may come back)
        self._cannot: dict[str, dict[str, str]] = {}  # endpoint -> {"kind", "error"}: why it is not ours
        self._beat_now = threading.Event()
        self.call(_warm_up())
        threading.Thread(target=self._renew, name="leases", daemon=True).start()
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def holds(self, task_id: str, held: bool) -> None:
        """A task came into this worker's hands (received from the broker) or left them (done)."""
        with self._leases_lock:  # said with the next heartbeat: well within the driver's LOST_S
            self._tasks[task_id] += 1 if held else -1
            if self._tasks[task_id] <= 0:
                del self._tasks[task_id]

    def _beat(self) -> None:
        """Every ``HEARTBEAT_S``: alive, holding these tasks, unable to serve these endpoints. The driver takes
        a worker whose word lapses (``ALIVE_S``) for gone, and sends its tasks to the others."""
        away = False
        while True:
            with self._leases_lock:
                word = json.dumps({"tasks": list(self._tasks), "cannot": self._cannot})
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(f"{WORKERS}:{self.name}", word, px=int(ALIVE_S * 1000))
                    pipe.sadd(WORKERS, self.name)
                    pipe.execute()
            except redis.exceptions.RedisError as exc:
                if not away:
                    log.warning("worker %s cannot reach Redis (%s): going on when it is back", self.name, exc)
                away = True
            else:
                if away:
                    log.warning("worker %s: Redis is back", self.name)
                away = False
            self._beat_now.wait(HEARTBEAT_S)
            self._beat_now.clear()

    def patiently(self, work: Callable[[], T]) -> T:
        """``work`` on Redis, again until Redis answers (it may be restarting), for up to ``REDIS_PATIENCE_S``."""
        deadline = time.monotonic() + REDIS_PATIENCE_S
        while True:
            try:
                return work()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S * 10)

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[bool]:
        """Hold ``name`` while the block runs, renewing it; yields False (holding nothing) if another has it."""
        key = f"audiobook:lease:{name}"
        token = f"{self.name}:{uuid.uuid4().hex}"
        if not self.patiently(lambda: self.redis.set(key, token, nx=True, px=int(self.lease_s * 1000))):
            yield False
            return
        with self._leases_lock:
            self._leases[key] = token
        try:
            yield True
        finally:
            with self._leases_lock:
                del self._leases[key]
            # Delete it only if it is still ours (it may have lapsed and been taken by another meanwhile).
            self.patiently(lambda: self.redis.eval(_RELEASE, 1, key, token))

    def _renew(self) -> None:
        """Every third of a lease's life, extend every lease this process holds (one round trip for all). A
        process that dies or hangs stops renewing; its leases lapse and another worker takes the work over."""
        while True:
            time.sleep(self.lease_s / 3)
            with self._leases_lock:
                held = list(self._leases)
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
        job (two runs at once, or one sent again) take turns."""
        name = f"{kind}:{hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()}"
        done_key = f"audiobook:done:{task_id}"
        while True:
            if (done := self.patiently(lambda: self.redis.get(done_key))) is not None:
                return json.loads(done)
            with self.lease(name) as mine:
                if mine:
                    with self._assembling:
                        result = work()
                    self.patiently(functools.partial(self.redis.set, done_key, json.dumps(result), ex=DONE_TTL_S))
                    return result
            time.sleep(POLL_S)

    def part(self, request: PartRequest) -> PartResult | None:
        """Make one part, or None: this worker cannot serve its endpoint (no key, or its key refused)."""
        if endpoint_of(request.backend) in self._cannot:
            return None
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

    async def _speak(self, request: PartRequest) -> tuple[Made | PartResult, RateNote] | None:
        """The part, and what this process's governor for its key knew then (read on the loop that changes
        it): the driver has no governor of its own to show or report. None: this worker cannot serve its
        endpoint (found out here, on the loop, so that no request waiting its turn is sent after)."""
        async with self._speaking:
            if endpoint_of(request.backend) in self._cannot:
                return None
            try:
                made = await make_part(self.synths(request.backend), request)
            except UsageError as exc:  # no key on this worker for that endpoint: every request would fail
                self._cannot_serve(request.backend, ErrorKind.AUTH, str(exc))
                return None
            if isinstance(made, PartResult) and made.error_kind in (ErrorKind.AUTH, ErrorKind.QUOTA):
                self._cannot_serve(request.backend, made.error_kind, made.error or "")  # its key, not the request
                return None
        stats = self.synths.governor(request.backend).stats()
        return made, RateNote(stats.limit_rpm, stats.limit_source, stats.throttled)

    def _request(self, request: PartRequest, store: Any) -> PartResult | None:
        spoken = self.call(self._speak(request))
        if spoken is None:
            return None
        made, note = spoken
        if isinstance(made, PartResult):
            return dataclasses.replace(made, error=f"{made.error} (on worker {self.name})")
        kept = keep_part(store, request, made, f" on {self.name}")
        return dataclasses.replace(kept, rate=note) if kept.ok else kept

    def _cannot_serve(self, backend: BackendOptions, kind: ErrorKind, error: str) -> None:
        endpoint = endpoint_of(backend)
        with self._leases_lock:
            first = endpoint not in self._cannot
            self._cannot[endpoint] = {"kind": kind.value, "error": error}
        if first:
            log.warning("worker %s cannot serve %s (%s): leaving its parts to workers that can", self.name,
                        endpoint, error)  # fmt: skip
        self._beat_now.set()

    def void(self, task_id: str) -> bool:
        """Whether the driver took this task back (its run stopped, or it was sent again)."""
        return bool(self.patiently(lambda: self.redis.exists(_void_key(task_id))))


async def _warm_up() -> None:
    """Ready means ready: what a worker's first request would load (the backends' modules, httpx's transport,
    its TLS settings and its asyncio backend: ~0.1 s) loads before the worker says it is ready."""
    import anyio
    import httpx

    from pipeline.tts import registry

    for backend in registry.names():
        registry.get(backend)
    async with httpx.AsyncClient():
        await anyio.sleep(0)


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


@app.task(name="audiobook.part", bind=True)
def part_task(task: Any, request: dict[str, Any]) -> Any:
    worker = _this_worker()
    made = worker.part(decode(PartRequest, request))
    if made is not None:
        # As a JSON string: Celery writes a repr of every result for its log, and a nested dict's costs a worker
        # more CPU than anything else it does for a part but the request itself.
        return json.dumps(encode(made))
    # Not for this worker: back to the queue at once (under the same id, which the driver waits on) for one
    # that can; this thread then rests, or it would take the next of the same straight back. The driver fails
    # them, naming the workers, if none can.
    if not worker.void(task.request.id):
        task.apply_async(args=[request], task_id=task.request.id, argsrepr="[part]", kwargsrepr="{}")
    time.sleep(REFUSE_PAUSE_S)
    raise Ignore()  # no result: the copy gives it


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

    # A task's result is stored when it is done, whenever Redis comes back.
    app.conf.update(result_backend_always_retry=True, result_backend_max_retries=int(REDIS_PATIENCE_S))

    @worker_ready.connect(weak=False)
    def ready(**_: Any) -> None:
        _this_worker()  # its heartbeat starts: the driver knows it is here
        log.info("worker %s ready: %d at a time, broker %s", _node(), run.concurrency, _safe(run.broker or ""))

    @task_received.connect(weak=False)
    def received(request: Any = None, **_: Any) -> None:
        _this_worker().holds(request.id, True)

    @task_postrun.connect(weak=False)
    def finished(task_id: str = "", **_: Any) -> None:
        _this_worker().holds(task_id, False)

    app.worker_main(
        [*([] if verbose else ["--quiet"]), "worker", "--pool", "threads", "--concurrency", str(2 * run.concurrency),
         "--without-gossip", "--without-mingle", "--hostname", f"audiobook@{_node()}",
         "--loglevel", "INFO" if verbose else "WARNING"]
    )  # fmt: skip


def _node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def endpoint_of(backend: BackendOptions) -> str:
    """What a worker serves or not: an endpoint and the variable its key is read from (never the key)."""
    return f"{backend_for(backend).identity(backend)} ${backend.api_key_env}"


def _void_key(task_id: str) -> str:
    return f"audiobook:void:{task_id}"


# ------------------------------------------------------------------------------------------- the driver


@dataclass(eq=False)
class _Sent:
    """A task of this run, as the driver follows it until its result is read."""

    name: str
    args: list[Any]
    result: AsyncResult  # the latest copy sent
    seen: float  # when it was last seen queued or in a worker's hands (or sent)
    request: PartRequest | None = None  # for a part
    holder: str | None = None  # the worker that had it in hand, last time it was seen
    withdrawn: bool = False  # taken back: the run stopped before any worker took it


@dataclass(frozen=True)
class _Look:
    """What the driver sees in Redis at one moment."""

    live: dict[str, dict[str, Any]]  # worker name -> its word: {"tasks": [...], "cannot": {endpoint: ...}}
    queued: frozenset[str]  # of the ids asked about, those waiting in the queue
    finished: frozenset[str]  # those with a result
    held: dict[str, str] = field(default_factory=dict)  # task id -> the live worker holding it


class CeleryExecutor(Interruptible):
    """Submits the run's work as tasks and turns their results back into the run's values.

    At most ``window`` part requests are outstanding (queued or running), so what is not yet sent can still be
    held back (a book that stopped). The workers' own concurrency decides how many are in flight at the speech
    server; the window is twice the run's concurrency, so that with ``--concurrency`` set to the workers' total
    a worker that finishes a request always finds the next one in hand.

    A watcher looks at the workers and the queue every ``WATCH_S`` (see the module's docstring): it sends
    again what a gone worker held, fails the parts no live worker can serve, says when no worker takes work,
    and on a stop takes back what no worker has taken. ``patience_s`` (default ``$AUDIOBOOK_WORKER_PATIENCE_S``
    or ``PATIENCE_S``) is how long without a worker taking work before it says so."""

    def __init__(self, run: RunOptions, *, patience_s: float | None = None):
        super().__init__()
        if not run.broker:
            raise UsageError("--engine celery needs a broker: --broker redis://HOST:6379/0 (or AUDIOBOOK_BROKER)")
        self.app = make_app(run.broker, run.redelivery_s)
        self.window = 2 * run.concurrency
        if patience_s is None:
            try:
                patience_s = float(os.environ.get(PATIENCE_ENV) or PATIENCE_S)
            except ValueError:
                raise UsageError(f"${PATIENCE_ENV} must be a number of seconds") from None
        self.patience_s = patience_s
        self._redis = redis.Redis.from_url(run.broker, socket_timeout=5, socket_connect_timeout=2)
        self._queue = self.app.conf.task_default_queue
        self._outstanding: dict[str, _Sent] = {}  # part requests, by the id of their latest copy
        self._jobs: dict[str, _Sent] = {}  # chapters and books to finish, the same way
        self._given_up: list[PartResult] = []  # parts no live worker can serve, for ``run`` to report
        self._to_drop: set[str] = set()  # ids to take out of the queue (a copy was sent, or the run stopped)
        self._away = False  # the broker did not answer the last time it was asked
        self._taken = time.monotonic()  # the last time a worker was seen with our work, or answered it
        self._warned = False
        self._alive: set[str] = set()  # the workers alive at the last look
        self._watcher: asyncio.Task[None] | None = None
        self._look_now = asyncio.Event()

    # Chapters and books are spread over the workers as they come.
    assembly_slots = 64

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._prepare)  # before the signal handlers: a broker that is not there is all
        await super().__aenter__()
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        # Whatever is still queued belongs to a run that is over: no worker may take it later.
        left = {*self._outstanding, *self._jobs, *self._to_drop}
        if left:
            with contextlib.suppress(*BROKER_ERRORS):
                await asyncio.to_thread(self._drop, left)
        await super().__aexit__(kind, exc, tb)

    def stop(self, reason: str, *, abandon: bool = False) -> None:
        super().stop(reason, abandon=abandon)
        self._look_now.set()  # take back what is queued now, not in a second

    def _abandon(self) -> None:
        # Stop waiting: what workers hold lands in the store anyway; what they do not is taken back on exit.
        self._to_drop.update(self._outstanding)
        self._outstanding.clear()

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        exhausted = False
        unsent: PartRequest | None = None  # pulled, but the broker was away
        while True:
            while not exhausted and not self._stopping.is_set() and not self._away:
                if len(self._outstanding) >= self.window:
                    break
                request = unsent or next(requests, None)
                if request is None:
                    exhausted = True
                    break
                sent = self._send("audiobook.part", [encode(request)], request)
                unsent = None if sent else request
                if sent is None:
                    break
            while self._given_up:
                on_result(self._given_up.pop(0))
            if not self._outstanding and (exhausted or self._stopping.is_set()):
                return
            if not self._away:
                try:
                    finished = await asyncio.to_thread(self._finished, list(self._outstanding))
                except BROKER_ERRORS as exc:
                    self._lost_broker(exc)
                    finished = []
                for task_id, result in finished:
                    sent = self._outstanding.pop(task_id, None)
                    if sent is None or sent.request is None:
                        continue  # given up meanwhile
                    self._taken = time.monotonic()
                    on_result(result if isinstance(result, PartResult) else _crashed(sent.request, result))
            await asyncio.sleep(RESULTS_POLL_S if not self._away else POLL_S)

    def _send(self, name: str, args: list[Any], request: PartRequest | None = None) -> _Sent | None:
        """Send a task (a part when ``request`` is given); None if the broker is away."""
        try:
            result = self.app.send_task(name, args=args, **_labels(request))
        except BROKER_ERRORS as exc:
            self._lost_broker(exc)
            return None
        sent = _Sent(name, args, result, time.monotonic(), request)
        (self._outstanding if request is not None else self._jobs)[result.id] = sent
        return sent

    def _finished(self, ids: list[str]) -> list[tuple[str, PartResult | BaseException]]:
        """Which of ``ids`` are done, read in a thread: one MGET of them all (Celery's ``get_many``, one pass,
        no wait), and one DEL of the results read."""
        out: list[tuple[str, PartResult | BaseException]] = []
        backend = self.app.backend
        for task_id, meta in list(backend.get_many(ids, interval=0, max_iterations=1)):
            value = meta["result"]
            ok = meta["status"] == "SUCCESS"
            out.append((task_id, decode(PartResult, json.loads(value)) if ok else _as_error(value)))
        if out:
            self._redis.delete(*(backend.get_key_for_task(task_id) for task_id, _ in out))
        return out

    def _lost_broker(self, exc: BaseException) -> None:
        if not self._away:
            log.warning("the broker at %s does not answer (%s): going on when it is back",
                        _safe(self.app.conf.broker_url), _first_line(exc))  # fmt: skip
        self._away = True

    def _prepare(self) -> None:
        """Reach the broker before the run starts (a clear error if it cannot), and make what Celery makes on
        first use (the result backend's client, the producers' pool), so the first parts do not wait for it."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
            self.app.backend.client.ping()
            with self.app.producer_or_acquire():
                pass
        except Exception as exc:  # kombu raises its own OperationalError
            raise UsageError(f"cannot reach the broker at {_safe(self.app.conf.broker_url)}: {exc}") from None

    # --------------------------------------------------------------------------------------- the watcher

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look_now.wait(), WATCH_S)
            self._look_now.clear()
            ids = {*self._outstanding, *self._jobs}
            drop, self._to_drop = self._to_drop, set()
            try:
                look = await asyncio.to_thread(self._look, ids, drop)
            except BROKER_ERRORS as exc:
                self._to_drop |= drop
                self._lost_broker(exc)
                continue
            if self._away:
                log.warning("the broker at %s is back: going on", _safe(self.app.conf.broker_url))
                self._away = False
            self._consider(look, ids)

    def _look(self, ids: set[str], drop: set[str]) -> _Look:
        """Read (in a thread) the live workers, which of ``ids`` are queued and which have a result; first
        take ``drop`` out of the queue."""
        self._drop(drop)
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in self._redis.smembers(WORKERS))
        words = self._redis.mget([f"{WORKERS}:{n}" for n in names]) if names else []
        live = {n: json.loads(w) for n, w in zip(names, words, strict=True) if w is not None}
        if gone := [n for n in names if n not in live]:
            self._redis.srem(WORKERS, *gone)
        held = {task_id: n for n, word in live.items() for task_id in word["tasks"] if task_id in ids}
        rest = [i for i in ids if i not in held]
        backend = self.app.backend
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in rest:
                pipe.exists(backend.get_key_for_task(task_id))
            exists = pipe.execute() if rest else []
        finished = frozenset(i for i, there in zip(rest, exists, strict=True) if there)
        queued: frozenset[str] = frozenset()
        if any(i not in finished for i in rest):  # the queue is read only when it may hold some of ours
            queued = frozenset(i for i in map(_message_id, self._redis.lrange(self._queue, 0, -1)) if i in ids)
        return _Look(live, queued, finished, held)

    def _consider(self, look: _Look, ids: set[str]) -> None:
        """Act on what was seen (on the loop: it changes what ``run`` and ``_wait`` follow)."""
        now = time.monotonic()
        if any(i in look.held for i in ids):
            self._taken = now
        if self._stopping.is_set():
            self._withdraw(look, ids)
        # A task in no queue and no live worker's hands: its worker is gone (one it was seen with, or one found
        # gone now: it took the task since it last spoke), or after LOST_S, Redis lost it.
        gone = [n for n in self._alive if n not in look.live]  # seen alive by this run, silent since
        self._alive = set(look.live)
        again: collections.Counter[str] = collections.Counter()
        for table in (self._outstanding, self._jobs):
            for task_id, sent in list(table.items()):
                if task_id not in ids or task_id in look.finished:
                    continue  # sent after the look, or its result is there to be read
                if task_id in look.held or task_id in look.queued:
                    sent.holder, sent.seen = look.held.get(task_id), now
                    continue
                if sent.holder is not None and sent.holder not in look.live:
                    why = f"worker {sent.holder} is gone"
                elif gone:
                    why = f"worker {' and '.join(gone)} {'is' if len(gone) == 1 else 'are'} gone"
                elif now - sent.seen > LOST_S:
                    why = f"in no queue and no worker's hands for {LOST_S:.0f} s (a Redis restarted?)"
                else:
                    continue
                if self._send_again(task_id, sent, table):
                    again[why] += 1
        for why, count in again.items():
            log.warning("%s: %d of this run's tasks sent again", why, count)
        self._give_up(look, ids)
        self._say_if_idle(look, now)

    def _send_again(self, task_id: str, sent: _Sent, table: dict[str, _Sent]) -> bool:
        try:
            copy = self.app.send_task(sent.name, args=sent.args, **_labels(sent.request))
        except BROKER_ERRORS as exc:
            self._lost_broker(exc)
            return False
        table.pop(task_id, None)
        self._to_drop.add(task_id)  # the dead worker's copy must not come back after redelivery_s
        sent.result, sent.seen, sent.holder = copy, time.monotonic(), None
        table[copy.id] = sent
        return True

    def _withdraw(self, look: _Look, ids: set[str]) -> None:
        """Stopped: take back every task no live worker has in hand (those are paid for: they land)."""
        for table in (self._outstanding, self._jobs):
            for task_id, sent in list(table.items()):
                if task_id in ids and task_id not in look.held and task_id not in look.finished:
                    table.pop(task_id, None)
                    sent.withdrawn = True
                    self._to_drop.add(task_id)
        if self._to_drop:
            self._look_now.set()  # out of the queue now

    def _give_up(self, look: _Look, ids: set[str]) -> None:
        """Fail the parts of an endpoint that every live worker said it cannot serve, naming them."""
        if not look.live:
            return
        for task_id, sent in list(self._outstanding.items()):
            if task_id not in ids or task_id in look.finished or sent.request is None:
                continue
            endpoint = endpoint_of(sent.request.backend)
            refusals = [(n, w["cannot"].get(endpoint)) for n, w in look.live.items()]
            if not all(why is not None for _n, why in refusals):
                continue
            reasons = "; ".join(f"worker {n}: {why['error']}" for n, why in refusals if why is not None)
            kinds = {why["kind"] for _n, why in refusals if why is not None}
            kind = ErrorKind.QUOTA if kinds == {ErrorKind.QUOTA.value} else ErrorKind.AUTH
            self._outstanding.pop(task_id, None)
            self._to_drop.add(task_id)
            self._given_up.append(
                PartResult(sent.request.key, PartStatus.REFUSED, error=f"no worker can serve {endpoint}: {reasons}",
                           error_kind=kind)
            )  # fmt: skip

    def _say_if_idle(self, look: _Look, now: float) -> None:
        if not self._outstanding and not self._jobs:
            self._taken, self._warned = now, False
        elif now - self._taken < self.patience_s:
            self._warned = False
        elif not self._warned:
            self._warned = True
            alive = f"{len(look.live)} alive, busy with other work" if look.live else "none is alive"
            log.warning("no worker has taken this run's work for %.0f s (%s): start one with "
                        "`audiobook worker --broker %s`, or stop with Ctrl-C", now - self._taken, alive,
                        _safe(self.app.conf.broker_url))  # fmt: skip

    def _drop(self, ids: Iterable[str]) -> None:
        """Take tasks out of Redis (in a thread): void, so a worker that has one in hand puts none back; out of
        the queue; out of the tasks a dead worker held, which Redis would give to another after redelivery_s."""
        ids = set(ids)
        if not ids:
            return
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.set(_void_key(task_id), 1, ex=VOID_S)
            pipe.execute()
        for raw in self._redis.lrange(self._queue, 0, -1):
            if _message_id(raw) in ids:
                self._redis.lrem(self._queue, 1, raw)  # type: ignore[arg-type]
        for tag, raw in self._redis.hgetall(UNACKED).items():
            with contextlib.suppress(ValueError, TypeError, IndexError):
                if _message_id(json.dumps(json.loads(raw)[0])) in ids:
                    self._redis.hdel(UNACKED, tag)
                    self._redis.zrem(UNACKED_INDEX, tag)

    # --------------------------------------------------------------------------------------- assembly

    async def assemble(self, job: ChapterJob) -> ChapterDone:
        value = await self._wait("audiobook.chapter", [encode(job)])
        if isinstance(value, BaseException):
            return ChapterDone(None, f"assembly failed on a worker: {value}")
        return decode(ChapterDone, value)

    async def finish(self, job: FinishJob, note: Callable[[str], None]) -> FinishDone:
        if job.options.m4b:
            note(f"building the M4B of {job.book.title} on a worker …")
        value = await self._wait("audiobook.finish", [encode(job)])
        if isinstance(value, BaseException):
            return FinishDone(None, f"finishing the book failed on a worker: {value}")
        return decode(FinishDone, value)

    async def _wait(self, name: str, args: list[Any]) -> Any:
        """Send a job and wait for its result, following the copies the watcher sends."""
        while (sent := self._send(name, args)) is None:
            if self._stopping.is_set():
                return RuntimeError("the run stopped before it was sent")
            await asyncio.sleep(POLL_S * 10)
        while True:
            if sent.withdrawn:
                return RuntimeError("the run stopped before a worker took it")
            try:
                result = sent.result
                if await asyncio.to_thread(result.ready):
                    value = result.get(propagate=False)
                    result.forget()
                    break
            except BROKER_ERRORS as exc:
                self._lost_broker(exc)
            await asyncio.sleep(POLL_S)
        self._jobs.pop(sent.result.id, None)
        self._taken = time.monotonic()
        return value


def _as_error(value: Any) -> BaseException:
    return value if isinstance(value, BaseException) else RuntimeError(str(value))


def _crashed(request: PartRequest, exc: BaseException) -> PartResult:
    """A task that raised (a bug, or a worker that could not start): the part failed, the next run retries."""
    return PartResult(request.key, PartStatus.FAILED, error=f"a worker failed on it: {type(exc).__name__}: {exc}")


def _labels(request: PartRequest | None) -> dict[str, str]:
    """What a task's message says of its arguments for logs: the part's key. Celery would otherwise write a
    repr of the whole request into every message, and that costs the driver more CPU than sending it."""
    return {"argsrepr": f"[part {request.key[:16]}]" if request is not None else "[job]", "kwargsrepr": "{}"}


def _message_id(raw: bytes | str) -> str | None:
    """The task id of a message as kombu keeps it in Redis (Celery's protocol 2: in its headers)."""
    try:
        message = json.loads(raw)
        return str(message["headers"]["id"])
    except (ValueError, TypeError, KeyError):
        return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _safe(url: str) -> str:
    """A broker URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
