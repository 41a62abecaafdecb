"""The local executor: asyncio workers in this process, at most ``concurrency`` requests in flight.

It owns the run's limit on requests in flight (the synthesizers' connections follow from it) and its
interruption: Ctrl-C or SIGTERM stops scheduling and lets the requests in flight land in the store (they are
paid for); a second signal abandons them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from pipeline.engines import failure
from pipeline.errors import SynthesisError
from pipeline.models import BackendOptions, ErrorKind, PartRequest, PartResult, PartStatus
from pipeline.store import Stores
from pipeline.tts.base import Synthesizer

log = logging.getLogger("audiobook")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LocalExecutor:
    def __init__(self, synths: Callable[[BackendOptions], Synthesizer], stores: Stores, concurrency: int):
        self.synths = synths
        self.stores = stores
        self.concurrency = concurrency
        self.stop_reason: str | None = None
        self._interrupted: str | None = None
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._stores: set[asyncio.Task[None]] = set()  # parts on their way to the store

    @property
    def interrupted(self) -> str | None:
        return self._interrupted

    # A context for the whole run, assembly included: a signal at any point is an interruption, not a crash.
    async def __aenter__(self) -> LocalExecutor:
        loop = asyncio.get_running_loop()
        # Parts are stored in threads (write + fsync); the default pool of cores + 4 threads would make stores
        # queue behind each other's fsync, so there is a thread per worker, plus one for assembly.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency + 2))
        for sig in _SIGNALS:
            # Not possible outside the main thread (or on Windows): Ctrl-C then raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self._interrupted is None:
            self._interrupted = name
            log.warning("%s received: finishing the requests in flight, then stopping (again to abort them)", name)
            self.stop(f"interrupted by {name}")
        else:
            log.warning("%s received again: abandoning the requests in flight", name)
            self.stop(f"interrupted by {name}", abandon=True)

    def stop(self, reason: str, *, abandon: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        if abandon:
            for worker in self._workers:
                worker.cancel()

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        self._workers = [asyncio.create_task(self._worker(requests, on_result)) for _ in range(self.concurrency)]
        outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        outcomes += await asyncio.gather(*self._stores, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome

    async def _worker(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        while not self._stopping.is_set():
            request = next(requests, None)
            if request is None:
                return
            store = self.stores.at(request.store)
            # In a thread: for a bucket it is a request, which must not hold up the answers of the others in flight.
            if await asyncio.to_thread(store.has, request.key, request.fmt):  # another book or process made it
                on_result(PartResult(request.key, PartStatus.CACHED))
                continue
            if self._stopping.is_set():
                return  # stopped while looking: nothing new is sent after a stop
            try:
                speech = await self.synths(request.backend).synthesize(request.text, request.spec)
            except SynthesisError as exc:
                on_result(failure(request, exc))
                continue
            done = PartResult(
                request.key,
                PartStatus.STORED,
                speech.attempts,
                len(request.text),
                rate_limited=speech.rate_limited,
                waited_s=speech.waited_s,
            )
            # Stored (write, fsync, rename) while this worker already sends its next request; the part counts
            # as done only once it is in the store, so an interruption never loses a stored part.
            task = asyncio.create_task(self._keep(request, speech.audio, done, on_result))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def _keep(
        self, request: PartRequest, audio: bytes, done: PartResult, on_result: Callable[[PartResult], None]
    ) -> None:
        store = self.stores.at(request.store)
        try:
            await asyncio.to_thread(store.put, request.key, audio, request.fmt)
        except OSError as exc:  # a full or read-only disk: every further answer would be lost too
            error = f"cannot store audio in the cache {store.location}: {exc.strerror or exc}"
            on_result(dataclasses.replace(done, status=PartStatus.FAILED, error=error, error_kind=ErrorKind.STORE))
            return
        on_result(done)
