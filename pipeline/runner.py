"""A run: the plans of one or more books, their missing parts made by an executor, each chapter assembled as
soon as its last part lands, each book finished and reported.

Every segment of every book goes to one executor (a batch shares it too), so concurrency never drains at a
chapter's or a book's end. Identical segments are requested once. A part counts only once it is in the store,
so an interrupted run loses at most the requests in flight. A chapter with a missing part is never written:
the run ends with exit 1 and names what is missing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.engines import Executor, Interruptible
from pipeline.errors import AudiobookError, FatalAPIError
from pipeline.jobs import ChapterJob, light
from pipeline.limits import GovernorStats, GovernorStopped, answered_in
from pipeline.models import (
    TARGETS,
    BackendOptions,
    ChapterAudio,
    ErrorKind,
    PartMeasure,
    PartRequest,
    PartResult,
    PartStatus,
    RateNote,
    Remake,
    Verdict,
)
from pipeline.outputs import FinishJob, clean_partial_files
from pipeline.planning import BookPlan, ChapterPlan
from pipeline.progress import ChapterEvent, Progress
from pipeline.report import (
    BookReport,
    BookStatus,
    ChapterOutcome,
    ChapterStatus,
    LoudnessFigures,
    RateFigures,
    SegmentFailure,
    SuspectPart,
    VerifyFigures,
    clock,
    write_report,
)
from pipeline.selection import PREVIEW_NAME
from pipeline.store import Stores
from pipeline.transcript import Coverage, compare
from pipeline.verify import Judge, badness, transcript_badness, with_transcript

if TYPE_CHECKING:
    from pipeline.tts.transcribe import Transcriber

log = logging.getLogger("audiobook")

# After this many segments in a row fail even with their retries, the server is taken to be down: stop
# instead of paying for (or waiting on) every remaining request.
MAX_CONSECUTIVE_FAILURES = 3
# Transcriptions that fail even with their retries, in a row, before the run stops asking for them.
MAX_TRANSCRIPTION_FAILURES = 3
# A worker's word that the limit holds requests back stands this long (answers come every few seconds at the
# slowest limits: 50 a minute).
NOTE_FRESH_S = 5.0


@dataclass(eq=False)
class _ChapterState:
    plan: ChapterPlan
    missing: set[str]
    # Parts requested into another book's store (a batch whose books keep parts apart): key -> that store.
    borrowed: dict[str, str] = field(default_factory=dict)
    failed: list[SegmentFailure] = field(default_factory=list)
    verified: int = 0  # its parts judged by verification
    remade: int = 0  # fresh requests for its suspect parts
    suspect: list[SuspectPart] = field(default_factory=list)  # its parts left suspect after their tries
    coverages: list[float] = field(default_factory=list)  # the transcript check's coverage of each settled part
    outcome: ChapterOutcome | None = None
    audio: ChapterAudio | None = None


@dataclass(eq=False)
class _Check:
    """One part's verification so far: the best try kept (in the store), its verdict, and the remakes sent."""

    best: PartMeasure
    verdict: Verdict
    badness: float
    tries: int = 0


@dataclass(eq=False)
class _BookState:
    plan: BookPlan
    chapters: list[_ChapterState]
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    synthesized: int = 0
    characters_sent: int = 0
    rate_limited: int = 0  # 429s of the key's rate limit its requests met (not attempts: not billed)
    waited_s: float = 0.0  # its requests' time held back by the rate governor, summed
    error: str | None = None  # set when a fatal error stopped this book
    rerun_helps: bool = True  # False once something went wrong that the same command cannot get past
    finishing: asyncio.Task[BookReport] | None = None  # set once every chapter is written
    judge: Judge = field(default_factory=Judge)  # the book's running speech-rate estimate (verification)
    verified: int = 0
    remade: int = 0
    suspects: list[SuspectPart] = field(default_factory=list)
    transcriptions: int = 0  # transcription requests sent for its parts (kept transcripts not counted)
    transcribed_s: float = 0.0  # the audio they carried, for their cost
    started: float = field(default_factory=time.time)
    last_answer: float | None = None


class Run:
    def __init__(
        self,
        plans: Sequence[BookPlan],
        executor: Executor,
        stores: Stores,
        *,
        progress: Progress | None = None,
        assemble: bool = True,
        limits: Callable[[BackendOptions], GovernorStats | None] = lambda _options: None,
        transcriber: Callable[[PartRequest], Transcriber | None] | None = None,
    ):
        # The transcript check (``verify = "transcribe"``): the client that hears a part's audio, or None where
        # the part's backend has no transcription endpoint (the offline voice: timing only, said once).
        self.transcriber = transcriber
        self._listening: set[asyncio.Task[None]] = set()  # transcriptions in flight
        self._deaf: str | None = None  # why the run stopped asking for transcriptions
        self._deaf_said: set[str] = set()
        self._hearers: set[Transcriber] = set()
        self._transcription_failures = 0
        self.plans = plans
        self.limits = limits  # what each endpoint's rate governor knows, for the reports
        self.executor = executor
        self.stores = stores
        self.progress = progress or Progress(enabled=False)
        self.assemble = assemble  # False: only fill the store (the benchmark measures synthesis alone)
        self.aborted: str | None = None  # set when whatever is left would fail the same way
        self._abort_is_final = False  # the abort was for a reason a rerun meets again (a key, a full disk)
        self._consecutive_failures = 0
        self._books: list[_BookState] = []
        self._requests: dict[str, PartRequest] = {}  # each distinct part once, in reading order
        self._owner: dict[str, _BookState] = {}  # the first book that needs a part: its counters pay for it
        self._waiting: dict[str, list[tuple[_BookState, _ChapterState]]] = {}  # key -> the chapters that need it
        self._assembly: asyncio.Queue[tuple[_BookState, _ChapterState] | None] = asyncio.Queue()
        # What the workers' governors said of each endpoint (engines whose governors are not this process's)
        # and when requests were answered: the progress line's and the report's word on the rate limit.
        self._notes: dict[BackendOptions, tuple[RateNote, float]] = {}
        self._answers: collections.deque[float] = collections.deque()
        self._started = time.monotonic()
        self._checks: dict[str, _Check] = {}  # verification: parts judged so far
        self._remakes: collections.deque[PartRequest] = collections.deque()  # fresh requests for suspect parts
        self._remakes_sent = 0

    async def execute(self) -> list[BookReport]:
        """Run to completion or interruption; every book's report is written either way."""
        total_chars = done_chars = 0
        # Books that keep their parts apart (a job's own cache_dir) still pay for a shared part once: one found
        # in, or requested into, another book's store is copied into this book's before its chapter is assembled.
        locations = list(dict.fromkeys(plan.store for plan in self.plans))
        for plan in self.plans:
            clean_partial_files(plan.out_dir)
            state = _BookState(plan, [])
            self._books.append(state)
            store = self.stores.at(plan.store)
            verifying = plan.options.verify != "off"
            for cp in plan.chapters:
                cs = _ChapterState(cp, set())
                state.chapters.append(cs)
                if cp.up_to_date:  # its loudness too is the earlier run's (the target is in the fingerprint)
                    levels = plan.previous.loudness.get(cp.filename) if plan.options.loudness else None
                    cs.outcome = _outcome(cp, ChapterStatus.UNCHANGED, cp.previous_duration_s, loudness=levels)
                    duration_ms = int((cs.outcome.duration_s or 0) * 1000)
                    cs.audio = ChapterAudio(cp.chapter, plan.out_dir / cp.filename, duration_ms)
                    continue
                for seg, key in zip(cp.segments, cp.keys, strict=True):
                    # Looked up again, not taken from the plan: in a batch the plan may be minutes old.
                    fmt = plan.options.part_format
                    hit = store.has(key, fmt)
                    # Verifying, a kept part is still sent to the executor, which reads its measure (or takes it,
                    # where the part has none) so it is judged with the rest: a rerun trusts nothing unchecked.
                    if hit and verifying:
                        hit = False
                    elif not hit and len(locations) > 1 and key not in self._requests:
                        elsewhere = self._kept_elsewhere(key, fmt, plan.store, locations)
                        if elsewhere is not None:
                            cs.borrowed[key] = elsewhere
                            hit = True
                    if hit:
                        state.cache_hits += 1
                        total_chars += len(seg.text)
                        done_chars += len(seg.text)
                        continue
                    if key in cs.missing:
                        continue  # the same sentence twice in one chapter: one part serves both
                    total_chars += len(seg.text)
                    cs.missing.add(key)
                    self._waiting.setdefault(key, []).append((state, cs))
                    if key not in self._requests:
                        self._owner[key] = state
                        self._requests[key] = PartRequest(
                            key, seg.voice_text, plan.options.voice_spec, plan.backend, plan.store, verify=verifying
                        )
                    elif self._requests[key].store != plan.store:
                        cs.borrowed[key] = self._requests[key].store  # paid once, copied before assembly
                if not cs.missing:
                    self._assembly.put_nowait((state, cs))
                else:
                    self._tell(state, cs, "waiting", len(cs.missing))
        if isinstance(self.executor, Interruptible):
            loop, executor = asyncio.get_running_loop(), self.executor

            def interrupt(why: str) -> None:  # from any thread: the executor is the loop's
                loop.call_soon_threadsafe(executor.interrupt, why)

            self.progress.interrupt = interrupt
        self.progress.start(total_chars, done_chars, len(self._requests))
        self._started = time.monotonic()
        assemblers = [asyncio.create_task(self._assembler()) for _ in range(self.executor.assembly_slots)]
        try:
            await self.executor.run(self._pending(), self._on_result)
            # Remakes asked for once the last request was out (or once the last transcripts came): another
            # round, until none is left to send.
            while True:
                await self._heard()
                if not self._remakes or self.aborted or self.executor.interrupted:
                    break
                sent = self._remakes_sent
                await self.executor.run(self._more(), self._on_result)
                if self._remakes_sent == sent:
                    break  # the executor took none: it was stopped
        finally:
            await self._heard()
            for _ in assemblers:
                self._assembly.put_nowait(None)
            await asyncio.gather(*assemblers)
            self.progress.close()
        # A book finished while others were still being spoken has its report; the rest are finished now.
        return list(await asyncio.gather(*(state.finishing or self._finish(state) for state in self._books)))

    def _pending(self) -> Iterator[PartRequest]:
        for key, request in self._requests.items():
            yield from self._more()
            if self.aborted or self.stores.at(request.store).failure is not None:
                return  # a failed write stops the sending at once; its result, on its way, says why
            if all(book.error for book, _ in self._waiting.get(key, [])):
                continue  # every book that needs it has stopped; the report names what is left undone
            yield request

    def _more(self) -> Iterator[PartRequest]:
        """The remakes waiting to be sent: they go before the next new request."""
        while self._remakes and not self.aborted:
            self._remakes_sent += 1
            yield self._remakes.popleft()

    # -- results --------------------------------------------------------------------------------------------

    def _on_result(self, result: PartResult) -> None:
        book = self._owner[result.key]
        book.requests += result.attempts
        book.retries += max(0, result.attempts - 1)
        book.characters_sent += result.characters
        book.rate_limited += result.rate_limited
        book.waited_s += result.waited_s
        if result.attempts > 1:
            for state, cs in self._waiting.get(result.key, []):
                self._tell(state, cs, "retry", result.attempts - 1)
        if result.attempts:
            book.last_answer = time.time()
            self._answers.append(time.monotonic())
        if result.rate is not None:
            self._notes[self._requests[result.key].backend] = (result.rate, time.monotonic())
        if result.status == PartStatus.CACHED:
            book.cache_hits += 1
        elif result.status == PartStatus.STORED:
            book.synthesized += 1
            self._consecutive_failures = 0
        check = self._checks.get(result.key)
        if check is not None and not result.ok and not (result.error_kind and result.error_kind.stops_run):
            # A remake that gave nothing: the kept copy stands, judged as it was.
            log.warning("a fresh request for a suspect part failed: %s", result.error)
            if self._verdict(book, result.key, check):
                self._arrived(result.key)
            return
        if result.ok:
            if self._requests[result.key].verify and not self._verified(book, result):
                return  # made again: it arrives with its remake's result
            self._arrived(result.key)
        elif result.error_kind is not None:
            self._refused(book, result)
        else:
            self._failed(result)

    # -- verification ---------------------------------------------------------------------------------------

    def _verified(self, book: _BookState, result: PartResult) -> bool:
        """Judge a part that arrived (``verify.Judge``, the book's estimate): True when it is settled (it sounds
        like its text, or its tries are spent), False when a fresh request for it was queued."""
        key, found = result.key, result.measure
        request = self._requests[key]
        check = self._checks.get(key)
        if check is None:
            if found is None:  # never trusted unmeasured: the executor could not decode it
                self._suspect(book, key, None, ("could not be measured",), 1)
                return True
            verdict = self._judge(book, request, found, learn=True)
            check = _Check(found, verdict, badness(found, verdict.expected_s, verdict.silence_limit_s))
            self._checks[key] = check
        elif result.kept and found is not None:  # the remake was better than the copy kept: it replaced it
            verdict = self._judge(book, request, found, learn=False)
            check.best, check.verdict = found, verdict
            check.badness = badness(found, verdict.expected_s, verdict.silence_limit_s)
        else:
            return self._verdict(book, key, check)  # the copy kept stands, judged (and heard) as it was
        if book.plan.options.verify == "transcribe" and self.transcriber is not None:
            task = asyncio.ensure_future(self._listen(book, key, check))
            self._listening.add(task)
            task.add_done_callback(self._listening.discard)
            return False  # settled once its transcript is compared
        return self._verdict(book, key, check)

    async def _heard(self) -> None:
        """Wait for the transcriptions in flight (each settles its part, or queues its remake)."""
        while self._listening:
            await asyncio.gather(*list(self._listening), return_exceptions=True)

    async def _listen(self, book: _BookState, key: str, check: _Check) -> None:
        """The transcript check of the copy kept: hear it (or read its kept transcript), compare it with the
        text, fold the coverage into the verdict, then settle the part or queue a fresh request for it."""
        request = self._requests[key]
        reason: str | None = None
        heard: Coverage | None = None
        try:
            heard = await self._hear(book, request, check.best)
        except GovernorStopped:  # not sent: the transcript check stopped, or the whole run is stopping
            if self._deaf is None:
                return  # the run stops: the part is left unsettled, so its chapter waits for the next run
            reason = f"not transcribed: {self._deaf}"
        except FatalAPIError as exc:  # a key or quota refused: every part would be; stop asking
            self._stop_listening(f"transcription refused: {exc}")
        except AudiobookError as exc:  # failed even with its retries (5xx, timeouts): this part unheard
            reason = f"transcription failed: {exc}"
            self._transcription_failures += 1
            if self._transcription_failures >= MAX_TRANSCRIPTION_FAILURES:
                self._stop_listening(f"{self._transcription_failures} transcriptions in a row failed; last: {exc}")
        except Exception as exc:  # never lose a part to a bug in hearing it: it is named unverified
            log.exception("transcribing a part failed")
            reason = f"transcription failed: {exc}"
        if heard is None and reason is None and self._deaf is not None:
            reason = f"not transcribed: {self._deaf}"
        if heard is not None:
            self._transcription_failures = 0
            check.verdict = with_transcript(check.verdict, heard)
            check.badness += transcript_badness(heard)  # on the timing badness _verified gave it
        elif reason is not None and check.verdict.ok:
            # Unverified, not suspect: nothing says the part is wrong, nothing proved it right; not made again.
            # (A part the timing check finds suspect is made again as without transcripts.)
            self._suspect(book, key, check.verdict, (f"unverified ({reason})",), check.tries + 1)
            self._arrived(key)
            return
        if self._verdict(book, key, check):
            self._arrived(key)

    async def _hear(self, book: _BookState, request: PartRequest, found: PartMeasure) -> Coverage | None:
        """The part's transcript compared with its text; None when there is no way to hear it."""
        assert self.transcriber is not None
        if self._deaf is not None:
            return None
        transcriber = self.transcriber(request)
        if transcriber is None:
            name = request.backend.name
            if name not in self._deaf_said:
                self._deaf_said.add(name)
                log.warning("verify = transcribe: the %s backend cannot transcribe; timing check only", name)
            return None
        self._hearers.add(transcriber)
        store = self.stores.at(request.store)
        fmt = request.fmt
        audio = await asyncio.to_thread(store.get, request.key, fmt)
        if audio is None:
            raise AudiobookError(f"part {request.key} is gone from {store.location}")
        language = book.plan.book.language
        # The store is read and written off the event loop (a bucket is a round trip); the request is async.
        kept = await asyncio.to_thread(transcriber.cached, request.key, audio, language=language)
        if kept is None:
            kept = await transcriber.transcribe(audio, language=language)
            book.transcriptions += 1
            book.transcribed_s += found.duration_s
            await asyncio.to_thread(transcriber.keep, request.key, audio, kept, language=language)
        return compare(request.text, kept, language=language)

    def _stop_listening(self, message: str) -> None:
        if self._deaf is None:
            self._deaf = message
            log.error("stopping the transcript check: %s", message)
            for transcriber in self._hearers:  # the transcriptions waiting for their turn are not sent
                transcriber.governor.stop()

    @staticmethod
    def _judge(book: _BookState, request: PartRequest, found: PartMeasure, *, learn: bool) -> Verdict:
        voice = f"{request.backend.name}/{request.spec.model}/{request.spec.voice}"
        return book.judge.judge(found, voice, request.spec.speed, learn=learn)

    def _verdict(self, book: _BookState, key: str, check: _Check) -> bool:
        """Settle a judged part, or queue a fresh request for it while it has tries left."""
        waiting = self._waiting.get(key, [])
        if check.verdict.ok:
            self._count_verified(book, key, check.verdict)
            return True
        request = self._requests[key]
        if check.tries < book.plan.options.verify_retries and not self.aborted and not self.executor.interrupted:
            check.tries += 1
            book.remade += 1
            for state, cs in waiting:
                cs.remade += 1
                self._tell(state, cs, "remade")
            v = check.verdict
            log.info(
                "part suspect (%s: voiced %.1f s, expected %.1f s): made again (%d of %d)",
                ", ".join(v.reasons), v.voiced_s, v.expected_s, check.tries, book.plan.options.verify_retries,
            )  # fmt: skip
            remake = Remake(v.expected_s, v.silence_limit_s, check.badness)
            self._remakes.append(dataclasses.replace(request, remake=remake))
            return False
        self._suspect(book, key, check.verdict, check.verdict.reasons, check.tries + 1)
        return True

    def _count_verified(self, book: _BookState, key: str, verdict: Verdict | None) -> None:
        """A part settled, passed or left suspect: counted in its book and every chapter that holds it."""
        book.verified += 1
        for _state, cs in self._waiting.get(key, []):
            cs.verified += 1
            if verdict is not None and verdict.coverage is not None:
                cs.coverages.append(verdict.coverage)

    def _suspect(self, book: _BookState, key: str, verdict: Verdict | None, reasons: tuple[str, ...], tries: int):
        """A part left suspect: named in the report of every chapter that holds it; the chapter is still written."""
        self._count_verified(book, key, verdict)
        for _state, cs in self._waiting.get(key, []):
            part = SuspectPart(
                chapter=cs.plan.chapter.index,
                chapter_title=cs.plan.chapter.title,
                segment=cs.plan.keys.index(key),
                text=_preview(self._requests[key].text, 12),
                reasons=reasons,
                voiced_s=verdict.voiced_s if verdict else 0.0,
                expected_s=verdict.expected_s if verdict else 0.0,
                low_s=verdict.low_s if verdict else 0.0,
                high_s=verdict.high_s if verdict else 0.0,
                longest_silence_s=verdict.longest_silence_s if verdict else 0.0,
                silence_limit_s=verdict.silence_limit_s if verdict else 0.0,
                tries=tries,
            )
            cs.suspect.append(part)
            _state.suspects.append(part)
            log.warning(
                "chapter %d segment %d unverified after %d tries: %s", part.chapter, part.segment, tries,
                ", ".join(reasons),
            )  # fmt: skip

    def rate_status(self) -> str | None:
        """The progress line's word on the rate limit from the notes results carry (the celery engine; the
        local one asks its own governors): "held back by the rate limit: 58/min (limit 60/min from config)"
        while a worker says its requests wait for the limit, else None. The rate is the whole run's answers
        over the last minute, every worker's together."""
        now = time.monotonic()
        while self._answers and self._answers[0] < now - 60:
            self._answers.popleft()
        for note, at in self._notes.values():
            if note.throttled and now - at <= NOTE_FRESH_S:
                rate = answered_in(len(self._answers), min(60.0, now - self._started))  # counted, not extrapolated
                limit = "" if note.limit_rpm is None else f" (limit {note.limit_rpm:.0f}/min from {note.limit_source})"
                return f"held back by the rate limit: {rate}{limit}"
        return None

    def _arrived(self, key: str) -> None:
        """A part is in the store: every chapter that waited for it may now be complete."""
        waiting = self._waiting.pop(key, [])
        self.progress.advance(len(self._requests[key].text) * len(waiting))
        for state, cs in waiting:
            cs.missing.discard(key)
            self._tell(state, cs, "part")
            if not cs.missing and not cs.failed and cs.outcome is None:
                self._assembly.put_nowait((state, cs))

    def _tell(self, state: _BookState, cs: _ChapterState, kind: str, count: int = 1, detail: str = "") -> None:
        self.progress.chapter(ChapterEvent(state.plan.out_dir, cs.plan.chapter.index, kind, count, detail))

    def _refused(self, book: _BookState, result: PartResult) -> None:
        message = result.error or "refused"
        assert result.error_kind is not None
        book.rerun_helps = False  # a refusal (key, quota, request, disk) is answered the same way next time
        if result.error_kind.stops_run:
            self._abort(message, final=True)
        elif not book.error:
            book.error = message
            log.error("%s: stopping this book: %s", book.plan.book.title, message)
        if result.error_kind == ErrorKind.STORE:
            # Said once, by the line that stops the run: the answers in flight meet the same disk.
            self._record_failure(result, quiet=True)

    def _failed(self, result: PartResult) -> None:
        self._record_failure(result)
        self._consecutive_failures += 1
        if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            self._abort(f"{self._consecutive_failures} segments in a row failed after retries; last: {result.error}")

    def _record_failure(self, result: PartResult, *, quiet: bool = False) -> None:
        for state, cs in self._waiting.get(result.key, []):
            seg = cs.plan.keys.index(result.key)
            text = _preview(self._requests[result.key].text)
            failure = SegmentFailure(cs.plan.chapter.index, cs.plan.chapter.title, seg, text, result.error or "failed")
            cs.failed.append(failure)
            self._tell(state, cs, "failed", detail=failure.error)
            (log.debug if quiet else log.error)(
                "chapter %d segment %d failed: %s", failure.chapter, failure.segment, failure.error
            )

    def _abort(self, message: str, *, final: bool = False) -> None:
        """Stop the whole run: whatever is left would fail the same way. The requests in flight are paid for,
        so they finish and land in the store, as on Ctrl-C."""
        if not self.aborted:
            self.aborted = message
            self._abort_is_final = final
            log.error("stopping: %s", message)
            self.executor.stop(message)

    # -- chapters and books ---------------------------------------------------------------------------------

    async def _assembler(self) -> None:
        while (item := await self._assembly.get()) is not None:
            state, cs = item
            if self.executor.interrupted or not self.assemble:
                continue  # interrupted: the parts are stored, the next run assembles this chapter
            await self._assemble(state, cs)

    async def _assemble(self, state: _BookState, cs: _ChapterState) -> None:
        plan, cp = state.plan, cs.plan
        if cs.borrowed:
            try:
                await asyncio.to_thread(self._copy_borrowed, plan, cs)
            except OSError as exc:
                state.rerun_helps = False
                error = f"cannot copy a shared part into the cache {plan.store}: {exc.strerror or exc}"
                cs.outcome = _outcome(cp, ChapterStatus.FAILED, None, error)
                log.error("chapter %d (%s) not written: %s", cp.chapter.index, cp.chapter.title, error)
                return
        chapter = dataclasses.replace(cp.chapter, paragraphs=())  # its text is in the segments already
        job = ChapterJob(
            light(plan.book), chapter, cp.segments, cp.keys, plan.store, plan.out_dir, plan.options,
            len(plan.book.chapters),  # the book's, not the selection's: track numbers and files stay the same
        )  # fmt: skip
        done = await self.executor.assemble(job)
        if done.audio is None:
            state.rerun_helps = state.rerun_helps and done.rerun_helps
            cs.outcome = _outcome(cp, ChapterStatus.FAILED, None, done.error)
            log.error("chapter %d (%s) not written: %s", cp.chapter.index, cp.chapter.title, done.error)
            self._tell(state, cs, "not written", detail=done.error or "not written")
            return
        cs.audio = done.audio
        levels = None
        if done.audio.loudness is not None and plan.options.loudness:
            levels = LoudnessFigures.of(done.audio.loudness, TARGETS[plan.options.loudness])
        cs.outcome = _outcome(cp, ChapterStatus.DONE, done.audio.duration_ms / 1000, loudness=levels)
        self.progress.note(f"wrote {done.audio.path.name} ({clock(done.audio.duration_ms / 1000)})")
        await asyncio.to_thread(self._checkpoint, state)
        self._tell(state, cs, "written", detail=done.audio.path.name)
        if all(c.outcome is not None and c.outcome.status.complete for c in state.chapters):
            state.finishing = asyncio.ensure_future(self._finish(state))  # its M4B need not wait for other books

    def _kept_elsewhere(self, key: str, fmt: str, own: str, locations: list[str]) -> str | None:
        """The other store of this run that already holds a part, if any."""
        return next((loc for loc in locations if loc != own and self.stores.at(loc).has(key, fmt)), None)

    def _copy_borrowed(self, plan: BookPlan, cs: _ChapterState) -> None:
        """Copy into this book's store the parts another book's request put in its own: the chapter is assembled
        from this book's store, and the next run plans against it."""
        fmt = plan.options.part_format
        target = self.stores.at(plan.store)
        for key, source in cs.borrowed.items():
            if target.has(key, fmt):
                continue
            data = self.stores.at(source).get(key, fmt)
            if data is not None:  # else assembly names the missing part
                target.put(key, data, fmt)

    def _outcomes(self, state: _BookState) -> tuple[list[ChapterOutcome], list[SegmentFailure]]:
        chapters: list[ChapterOutcome] = []
        failures: list[SegmentFailure] = []
        for cs in state.chapters:
            failures.extend(cs.failed)
            if cs.outcome is not None:
                outcome = cs.outcome
            elif cs.failed:
                outcome = _outcome(cs.plan, ChapterStatus.FAILED, None, cs.failed[0].error)
            else:
                outcome = _outcome(cs.plan, ChapterStatus.NOT_STARTED, None)
            # A chapter holding a suspect part is not recorded as current (no fingerprint): the next run plans it
            # again, judges its parts and asks afresh for the suspect ones, rather than calling the book done.
            fingerprint = None if cs.suspect else outcome.fingerprint
            heard = cs.coverages
            chapters.append(
                dataclasses.replace(
                    outcome,
                    verified=cs.verified,
                    remade=cs.remade,
                    suspect=len(cs.suspect),
                    fingerprint=fingerprint,
                    coverage_min=round(min(heard), 4) if heard else None,
                    coverage_mean=round(sum(heard) / len(heard), 4) if heard else None,
                )
            )
        return chapters, failures

    def _checkpoint(self, state: _BookState) -> None:
        """Record each chapter as it is written: a run killed during a long assembly or the M4B then costs only
        what was unfinished. The earlier run's playlist, M4B and chapter files are carried over, so the next run
        still knows what to tidy."""
        chapters, failures = self._outcomes(state)
        previous = state.plan.previous
        current = {c.file for c in chapters} | {c.file for c in state.plan.kept}
        report = self._report(state, BookStatus.RUNNING, chapters, failures, None)
        report = dataclasses.replace(
            report,
            playlist=previous.playlist,
            m4b=previous.m4b,
            leftovers=tuple(sorted(previous.files - current)),
        )
        try:
            write_report(state.plan.out_dir, report)
        except OSError as exc:  # the chapter itself is written; only the head start for a killed run is lost
            log.warning("cannot record progress in %s: %s", state.plan.out_dir, exc.strerror or exc)

    async def _finish(self, state: _BookState) -> BookReport:
        plan = state.plan
        chapters, failures = self._outcomes(state)
        complete = all(c.status.complete for c in chapters)
        error = state.error or self.aborted
        interrupted = self.executor.interrupted
        status = BookStatus.DONE if complete else (BookStatus.INTERRUPTED if interrupted else BookStatus.FAILED)
        if status == BookStatus.DONE and state.suspects:
            status = BookStatus.UNVERIFIED  # written, but never "done" with a part that does not sound its text
        if status != BookStatus.DONE and error is None and interrupted:
            error = f"interrupted by {interrupted}"
        report = self._report(state, status, chapters, failures, error)
        if complete and self.assemble:
            audios = tuple(cs.audio for cs in state.chapters if cs.audio is not None)
            # The chapters kept outside a selection are not the earlier run's to tidy: they stay as they are.
            previous = dataclasses.replace(plan.previous, files=plan.previous.files - {c.file for c in plan.kept})
            job = FinishJob(light(plan.book), plan.options, plan.out_dir, previous, audios, tuple(chapters))
            done = await self.executor.finish(job, self.progress.note)
            if done.finished is not None:
                f = done.finished
                report = dataclasses.replace(
                    report, playlist=f.playlist, m4b=f.m4b, m4b_fingerprint=f.m4b_fingerprint, book_files=f.book_files
                )
                if plan.selection is None:
                    self._drop_preview(plan)
            else:
                report = dataclasses.replace(report, status=BookStatus.FAILED, error=done.error)
        if self.assemble:
            await asyncio.to_thread(write_report, plan.out_dir, report)
        return report

    def _drop_preview(self, plan: BookPlan) -> None:
        """The whole book is written: its preview (``--preview``) goes, or a library scanning the folder would
        take it for a track. Its parts are in the first chapter and cached: a new preview is free."""
        preview = plan.out_dir / PREVIEW_NAME
        if preview.is_file():
            preview.unlink(missing_ok=True)
            self.progress.note(f"removed {PREVIEW_NAME}: the whole book is written (a new preview costs nothing)")

    def _report(
        self,
        state: _BookState,
        status: BookStatus,
        chapters: list[ChapterOutcome],
        failures: list[SegmentFailure],
        error: str | None,
    ) -> BookReport:
        plan = state.plan
        now = time.time()
        return BookReport(
            status=status,
            plan=plan.summary(),
            chapters=tuple(chapters),
            requests=state.requests,
            retries=state.retries,
            cache_hits=state.cache_hits,
            synthesized=state.synthesized,
            characters_sent=state.characters_sent,
            failures=tuple(failures),
            duration_s=round(sum(c.duration_s or 0 for c in chapters), 3),
            elapsed_s=round(now - state.started, 3),
            estimated_cost_usd=round(plan.cost(state.characters_sent), 4),
            started=_iso(state.started),
            finished=_iso(now),
            error=error,
            rate=self._rate(state),
            rerun_helps=state.rerun_helps and not (self._abort_is_final and error == self.aborted),
            verification=self._verification(state),
            kept=plan.kept,
        )

    @staticmethod
    def _verification(state: _BookState) -> VerifyFigures | None:
        mode = state.plan.options.verify
        if mode == "off":
            return None
        suspects = tuple(state.suspects)
        if mode != "transcribe":
            return VerifyFigures(mode, state.verified, state.remade, len(suspects), suspects)
        from pipeline.tts.transcribe import transcription_cost  # the HTTP client: loaded only when hearing

        cost = transcription_cost(state.plan.backend, state.transcribed_s / 60)
        return VerifyFigures(
            mode, state.verified, state.remade, len(suspects), suspects, state.transcriptions, round(cost, 4)
        )

    def _rate(self, state: _BookState) -> RateFigures:
        limit: GovernorStats | RateNote | None = self.limits(state.plan.backend)
        if limit is None and state.plan.backend in self._notes:
            limit = self._notes[state.plan.backend][0]  # the workers' last word
        span = (state.last_answer or state.started) - state.started
        return RateFigures(
            requests_per_minute=round(state.requests * 60 / span, 1) if span > 0 else 0.0,
            rate_limited=state.rate_limited,
            waited_s=round(state.waited_s, 3),
            limit_rpm=limit.limit_rpm if limit else None,
            limit_source=limit.limit_source if limit else None,
        )


def _outcome(
    cp: ChapterPlan,
    status: ChapterStatus,
    duration: float | None,
    error: str | None = None,
    *,
    loudness: LoudnessFigures | None = None,
) -> ChapterOutcome:
    return ChapterOutcome(
        index=cp.chapter.index,
        title=cp.chapter.title,
        file=cp.filename,
        status=status,
        segments=len(cp.segments),
        characters=cp.characters,
        duration_s=round(duration, 3) if duration is not None else None,
        fingerprint=cp.fingerprint if status.complete else None,
        error=error,
        loudness=loudness if status.complete else None,
    )


def _preview(text: str, words: int = 8) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "") if parts else text[:40]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
