"""The local executor: asyncio workers in this process, at most ``concurrency`` requests in flight.

It owns the run's limit on requests in flight (the synthesizers' connections follow from it) and its
interruption (see ``Interruptible``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Self

from pipeline import jobs
from pipeline.engines import Interruptible, Made, keep_part, make_part
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.limits import GovernorStopped
from pipeline.models import BackendOptions, PartRequest, PartResult, PartStatus
from pipeline.outputs import FinishJob
from pipeline.store import Stores
from pipeline.tts.base import Synthesizer

log = logging.getLogger("audiobook")


class LocalExecutor(Interruptible):
    def __init__(
        self,
        synths: Callable[[BackendOptions], Synthesizer],
        stores: Stores,
        concurrency: int,
        on_stop: Callable[[], None] = lambda: None,
    ):
        super().__init__()
        self.synths = synths
        self._on_stop = on_stop  # tells the rate governors: a request refused or waiting now is not sent
        self.stores = stores
        self.concurrency = concurrency
        self._workers: list[asyncio.Task[None]] = []
        self._stores: set[asyncio.Task[None]] = set()  # parts on their way to the store

    async def __aenter__(self) -> Self:
        # Parts are stored in threads (write + fsync); the default pool of cores + 4 threads would make stores
        # queue behind each other's fsync, so there is a thread per worker, plus one for assembly.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=self.concurrency + 2))
        await super().__aenter__()
        return self

    def stop(self, reason: str, *, abandon: bool = False) -> None:
        super().stop(reason, abandon=abandon)
        self._on_stop()

    def _abandon(self) -> None:
        for worker in self._workers:
            worker.cancel()

    # One chapter at a time: assembly overlaps the requests, and memory stays that of one chapter's two parts.
    assembly_slots = 1

    async def assemble(self, job: ChapterJob) -> ChapterDone:
        return await asyncio.to_thread(jobs.assemble, job, self.stores)

    async def finish(self, job: FinishJob, note: Callable[[str], None]) -> FinishDone:
        return await asyncio.to_thread(jobs.finish, job, note)

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        self._workers = [asyncio.create_task(self._worker(requests, on_result)) for _ in range(self.concurrency)]
        outcomes = await asyncio.gather(*self._workers, return_exceptions=True)
        outcomes += await asyncio.gather(*self._stores, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome

    async def _worker(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        writing: asyncio.Task[None] | None = None  # this worker's last part on its way to the store
        while not self._stopping.is_set():
            request = next(requests, None)
            if request is None:
                return
            store = self.stores.at(request.store)
            # A bucket is asked from a thread: a round trip must not hold up the answers of the others in flight.
            # A folder is a stat, cheaper than the thread.
            found = (
                await asyncio.to_thread(store.has, request.key, request.fmt)
                if store.remote
                else store.has(request.key, request.fmt)
            )
            if found:  # another book or process made it
                on_result(PartResult(request.key, PartStatus.CACHED))
                continue
            if self._stopping.is_set():
                return  # stopped while looking: nothing new is sent after a stop
            try:
                made = await make_part(self.synths(request.backend), request)
            except GovernorStopped:
                return  # stopping: refused or not yet sent, it is not sent again; the next run makes it
            if isinstance(made, PartResult):
                on_result(made)
                continue
            # Stored (write, fsync, rename) while this worker already sends its next request; the part counts
            # as done only once it is in the store, so an interruption never loses a stored part. One write at a
            # time per worker: answers never pile up in memory behind a slow disk (at most two a worker).
            if writing is not None:
                await asyncio.wait([writing])
            task = asyncio.create_task(self._keep(request, made, on_result))
            writing = task
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def _keep(self, request: PartRequest, made: Made, on_result: Callable[[PartResult], None]) -> None:
        on_result(await asyncio.to_thread(keep_part, self.stores.at(request.store), request, made))
