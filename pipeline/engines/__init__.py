"""Executors: what turns part requests into stored parts. The run hands an executor plain ``PartRequest``
values and gets ``PartResult`` values back; how the work is spread (asyncio tasks in this process today) is
the executor's business alone.

Part requests, chapters to assemble and books to finish are the units of work (``models``, ``jobs``).

    LocalExecutor (engines/local.py)     asyncio workers in this process, the default
    CeleryExecutor (engines/celery.py)   Celery tasks on a Redis broker, run by ``audiobook worker`` processes

Making one part (asking the synthesizer, then keeping the answer) is written once, here: ``make_part`` and
``keep_part``; every executor calls them, wherever it runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from pipeline import media, verify
from pipeline.errors import (
    AudioError,
    AuthError,
    BadRequestError,
    FatalAPIError,
    KeyResting,
    QuotaError,
    SynthesisError,
)
from pipeline.jobs import ChapterDone, ChapterJob, FinishDone
from pipeline.models import ErrorKind, PartMeasure, PartRequest, PartResult, PartStatus
from pipeline.outputs import FinishJob
from pipeline.store import PartStore
from pipeline.tts.base import Synthesizer


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


log = logging.getLogger("audiobook")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interruptible:
    """Ctrl-C and SIGTERM for a whole run, assembly included (a signal at any point is an interruption, not a
    crash): the first stops taking work and lets what is in flight land (it is paid for); a second abandons it.
    Executors use it as an async context manager around the run."""

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self._interrupted: str | None = None
        self._stopping = asyncio.Event()

    @property
    def interrupted(self) -> str | None:
        return self._interrupted

    async def __aenter__(self) -> Self:
        media.allow_tools()
        loop = asyncio.get_running_loop()
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
            log.warning("%s received: finishing the requests in flight, then stopping (again to abort them)", name)
            self.interrupt(name)
        else:
            log.warning("%s received again: abandoning the requests in flight and ending ffmpeg", name)
            self.stop(f"interrupted by {name}", abandon=True)
            # A chapter or an M4B being encoded runs in a thread no cancel reaches: end its ffmpeg instead.
            media.stop_tools()

    def interrupt(self, name: str) -> None:
        """Stop as a first signal does, for ``name`` (a front end's cancel): the requests in flight land, the
        books are reported interrupted, and a later run resumes from the parts kept."""
        if self._interrupted is None:
            self._interrupted = name
            self.stop(f"interrupted by {name}")

    def stop(self, reason: str, *, abandon: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        if abandon:
            self._abandon()

    def _abandon(self) -> None:
        """Give up the work in flight (a second signal, or every one of them would fail the same way)."""


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
        elif isinstance(exc, KeyResting):
            kind = ErrorKind.RESTING
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


@dataclass(frozen=True)
class Made:
    """A part's audio as the synthesizer answered it, and what its result is once it is in the store."""

    audio: bytes
    result: PartResult


async def make_part(synth: Synthesizer, request: PartRequest) -> Made | PartResult:
    """Ask ``synth`` for one part: its audio, or the typed result of a request that gave none."""
    try:
        speech = await synth.synthesize(request.text, request.spec)
    except SynthesisError as exc:
        return failure(request, exc)
    done = PartResult(
        request.key,
        PartStatus.STORED,
        speech.attempts,
        len(request.text),
        rate_limited=speech.rate_limited,
        waited_s=speech.waited_s,
    )
    return Made(speech.audio, done)


def keep_part(store: PartStore, request: PartRequest, made: Made, where: str = "") -> PartResult:
    """Put a made part in ``store`` (a blocking write: call it from a thread). It counts as stored only once it
    is there; a store that cannot keep it (a full or read-only disk) is a run-stopping result, since every
    further answer would be lost too. ``where`` names the machine in the message, when it is not this one.

    With ``request.verify`` the part is measured here, where it arrives, and its measure kept beside it; the
    runner judges it. A remake replaces the kept copy only if it is better (``verify.badness``)."""
    found = _measure(request, made.audio) if request.verify else None
    kept = True
    if request.remake is not None and found is not None:
        remake = request.remake
        kept = verify.badness(found, remake.expected_voiced_s, remake.silence_limit_s) < remake.best_badness
    try:
        if kept:
            store.put(request.key, made.audio, request.fmt)
            if found is not None:
                verify.save(store, request.key, request.fmt, found)
    except OSError as exc:
        error = f"cannot store audio in the cache {store.location}{where}: {exc.strerror or exc}"
        return dataclasses.replace(made.result, status=PartStatus.FAILED, error=error, error_kind=ErrorKind.STORE)
    return dataclasses.replace(made.result, measure=found, kept=kept)


def _measure(request: PartRequest, audio: bytes) -> PartMeasure | None:
    try:
        return verify.measure(audio, request.fmt, request.text)
    except (AudioError, ValueError) as exc:  # kept unmeasured: the runner names it unverified
        log.warning("cannot measure a part for verification: %s", exc)
        return None


def cached_part(store: PartStore, request: PartRequest) -> PartResult:
    """The result of a request whose part the store already holds (a blocking read: call it from a thread when
    the store is remote): with ``request.verify``, with its kept measure, measured now if it has none."""
    found = None
    if request.verify:
        try:
            found = verify.measured(store, request.key, request.fmt, request.text)
        except (AudioError, ValueError) as exc:
            log.warning("cannot measure a cached part for verification: %s", exc)
    return PartResult(request.key, PartStatus.CACHED, measure=found)
