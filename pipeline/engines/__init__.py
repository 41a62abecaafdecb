"""Executors: what turns part requests into stored parts. The run hands an executor plain ``PartRequest``
values and gets ``PartResult`` values back; how the work is spread (asyncio tasks in this process today) is
the executor's business alone.

Part requests, chapters to assemble and books to finish are the units of work (``models``, ``jobs``).

    LocalExecutor (engines/local.py)   asyncio workers in this process, the default
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from pipeline.errors import AuthError, BadRequestError, FatalAPIError, QuotaError, SynthesisError
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.models import ErrorKind, PartRequest, PartResult, PartStatus
from pipeline.outputs import FinishJob


class Executor(Protocol):
    @property
    def interrupted(self) -> str | None:
        """The signal that stopped the run (``"SIGINT"``), or None."""
        ...

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        """Make every request, pulling the next one only when there is room for it, and report each result
        as it lands (stored, or failed for good). Returns when all are done or after ``stop``."""
        ...

    def stop(self, reason: str, *, abandon: bool = False) -> None:
        """Take no new request. Those in flight are paid for, so they finish and land in the store, unless
        ``abandon`` says every one of them would fail the same way."""
        ...

    @property
    def assembly_slots(self) -> int:
        """How many chapters may be assembled at once."""
        ...

    async def assemble(self, job: ChapterJob) -> ChapterDone:
        """Write one chapter from its stored parts (``jobs.assemble``)."""
        ...

    async def finish(self, job: FinishJob, note: Callable[[str], None]) -> FinishDone:
        """Give a complete book its playlist and M4B, and tidy its folder (``jobs.finish``)."""
        ...


def failure(request: PartRequest, exc: SynthesisError) -> PartResult:
    """The result of a request that did not give a part, typed by what it stops."""
    kind: ErrorKind | None = None
    if isinstance(exc, FatalAPIError):
        if isinstance(exc, AuthError):
            kind = ErrorKind.AUTH
        elif isinstance(exc, QuotaError):
            kind = ErrorKind.QUOTA
        elif isinstance(exc, BadRequestError):
            kind = ErrorKind.BAD_REQUEST
        else:
            kind = ErrorKind.REFUSED
    status = PartStatus.REFUSED if kind is not None else PartStatus.FAILED
    return PartResult(
        request.key,
        status,
        attempts=exc.attempts,
        error=str(exc),
        error_kind=kind,
        rate_limited=exc.rate_limited,
        waited_s=exc.waited_s,
    )
