"""A run on its own: plans in, parts through the local executor with a fake synthesizer, chapters assembled,
reports out. No HTTP here; the end-to-end tests cover the same through the CLI and a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Settings, load_settings
from pipeline.engines.local import LocalExecutor
from pipeline.errors import AuthError, BadRequestError, RetryableError, SynthesisError
from pipeline.models import Book, Chapter, PartRequest, PartResult, RateNote, SpeechResult, VoiceSpec
from pipeline.planning import BookPlan, plan_book
from pipeline.report import BookReport, BookStatus, ChapterStatus, read_previous
from pipeline.runner import Run
from pipeline.store import FileStore, Stores
from tests.fakeserver import audio_for


class AudioSynth:
    """Real MP3 for each text (the fake server's tone), or the error ``fail`` names for it."""

    def __init__(self, fail: dict[str, SynthesisError] | None = None):
        self.fail = fail or {}
        self.calls: list[str] = []

    def identity(self) -> str:
        return "fake"

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        self.calls.append(text)
        await asyncio.sleep(0)
        for needle, error in self.fail.items():
            if needle in text:
                raise error
        return SpeechResult(audio_for(text, 2.0), attempts=1)

    async def aclose(self) -> None:
        pass


def settings(tmp_path: Path) -> Settings:
    # A segment per paragraph, so each test line is one request (packing has its own tests).
    # Verification off: this fake voice speaks at no human rate (test_verify.py has its own tests).
    overrides = {"cache_dir": tmp_path / "cache", "announce_titles": False, "pack": False, "verify": "off"}
    return load_settings(env={}, overrides=overrides)


def book(title: str, *chapters: tuple[str, ...]) -> Book:
    return Book(title, tuple(Chapter(i, f"Chapter {i}", paras) for i, paras in enumerate(chapters, 1)))


def run(plans: list[BookPlan], stores: Stores, synth: AudioSynth, concurrency: int = 2) -> list[BookReport]:
    async def go() -> list[BookReport]:
        async with LocalExecutor(lambda _options: synth, stores, concurrency) as executor:
            return await Run(plans, executor, stores).execute()

    return asyncio.run(go())


def plans_for(tmp_path: Path, stores: Stores, *books: Book) -> list[BookPlan]:
    s = settings(tmp_path)
    store = stores.at(s.book.cache_location)
    return [plan_book(b, s, tmp_path / f"out{i}", store) for i, b in enumerate(books)]


def test_a_sentence_shared_by_books_and_chapters_is_requested_once(tmp_path: Path) -> None:
    stores = Stores()
    a = book("A", ("Shared line.", "Only in A."), ("Shared line.",))
    b = book("B", ("Shared line.", "Only in B."))
    synth = AudioSynth()
    reports = run(plans_for(tmp_path, stores, a, b), stores, synth)
    assert sorted(synth.calls) == ["Only in A.", "Only in B.", "Shared line."]
    assert [r.status for r in reports] == [BookStatus.DONE, BookStatus.DONE]
    assert reports[0].requests == 2 and reports[1].requests == 1  # the first book that needs a part pays
    assert reports[1].cache_hits == 0 and reports[1].synthesized == 1
    for i, r in enumerate(reports):
        assert all(c.status == ChapterStatus.DONE for c in r.chapters)
        assert read_previous(tmp_path / f"out{i}").current  # the report is written and read back


def test_a_failing_part_fails_its_chapter_only_and_the_rerun_pays_for_it_alone(tmp_path: Path) -> None:
    stores = Stores()
    b = book("B", ("Fine one.", "Fine two."), ("Troubled line.", "Fine three."))
    synth = AudioSynth({"Troubled": RetryableError("HTTP 503 after 5 attempts", attempts=5)})
    (report,) = run(plans_for(tmp_path, stores, b), stores, synth)
    assert report.status == BookStatus.FAILED
    assert [c.status for c in report.chapters] == [ChapterStatus.DONE, ChapterStatus.FAILED]
    assert report.requests == 3 + 5 and report.retries == 4  # attempts counted from the results
    assert report.failures[0].chapter == 2 and "503" in (report.problem() or "")
    assert not (tmp_path / "out0" / "02 Chapter 2.mp3").exists()  # never a chapter with a hole

    synth = AudioSynth()
    (report,) = run(plans_for(tmp_path, stores, b), stores, synth)
    assert synth.calls == ["Troubled line."] and report.status == BookStatus.DONE
    assert [c.status for c in report.chapters] == [ChapterStatus.UNCHANGED, ChapterStatus.DONE]


def test_three_failures_in_a_row_stop_the_run(tmp_path: Path) -> None:
    stores = Stores()
    b = book("B", tuple(f"Line {i}." for i in range(20)))
    synth = AudioSynth({"Line": RetryableError("HTTP 500", attempts=1)})
    (report,) = run(plans_for(tmp_path, stores, b), stores, synth, concurrency=1)
    assert len(synth.calls) == 3 and report.status == BookStatus.FAILED
    assert "3 segments in a row failed" in (report.error or "")


def test_a_bad_request_stops_its_book_and_a_bad_key_stops_the_run(tmp_path: Path) -> None:
    stores = Stores()
    a = book("A", tuple(f"Alpha {i}." for i in range(6)))
    b = book("B", tuple(f"Beta {i}." for i in range(6)))
    synth = AudioSynth({"Alpha 0": BadRequestError("unknown voice")})
    ra, rb = run(plans_for(tmp_path, stores, a, b), stores, synth, concurrency=1)
    assert ra.status == BookStatus.FAILED and ra.error == "unknown voice"
    assert not any(c.startswith("Alpha") and c != "Alpha 0." for c in synth.calls)  # its other parts skipped
    assert rb.status == BookStatus.DONE

    stores = Stores()
    synth = AudioSynth({"Alpha 2": AuthError("HTTP 401: bad key")})
    ra, rb = run(plans_for(tmp_path / "2", stores, a, b), stores, synth, concurrency=1)
    assert ra.error == rb.error == "HTTP 401: bad key" and len(synth.calls) == 3
    assert not any(c.startswith("Beta") for c in synth.calls)


class SlowAudioSynth(AudioSynth):
    """Fails texts with "Bad" at once; takes its time over the others."""

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        if "Bad" not in text:
            await asyncio.sleep(0.2)
        return await super().synthesize(text, spec)


def test_a_run_stopped_early_keeps_the_answers_already_paid_for(tmp_path: Path) -> None:
    # Three failures in a row end the run while three good requests are on their way: they are paid for, so
    # they land in the store and the next run does not ask for them again.
    stores = Stores()
    later = tuple(f"Later line {i}." for i in range(20))
    b = book("B", ("Good one.", "Good two.", "Good three.", "Bad one.", "Bad two.", "Bad three.", *later))
    synth = SlowAudioSynth({"Bad": RetryableError("HTTP 500", attempts=1)})
    (report,) = run(plans_for(tmp_path, stores, b), stores, synth, concurrency=6)
    assert "3 segments in a row failed" in (report.error or "")
    assert sum("Later" in c for c in synth.calls) <= 2  # nothing new started once the third one failed
    store = stores.at(tmp_path / "cache")
    plan = plans_for(tmp_path, Stores(), b)[0]
    kept = {seg.text for seg, key in zip(plan.chapters[0].segments, plan.chapters[0].keys, strict=True)
            if store.has(key, "mp3")}  # fmt: skip
    assert {"Good one.", "Good two.", "Good three."} <= kept
    assert kept - {"Good one.", "Good two.", "Good three."} <= set(later)  # and so did any sent meanwhile


class NotingExecutor(LocalExecutor):
    """The local executor with a rate note on each result, as the celery engine's workers send them: their
    governors are not the run's, so the run learns of the key's limit only from what results carry."""

    def __init__(self, note: RateNote, *args: Any) -> None:
        super().__init__(*args)
        self.note = note

    async def run(self, requests: Iterator[PartRequest], on_result: Callable[[PartResult], None]) -> None:
        await super().run(requests, lambda result: on_result(dataclasses.replace(result, rate=self.note)))


def run_noting(tmp_path: Path, note: RateNote) -> tuple[Run, BookReport]:
    stores = Stores()
    plans = plans_for(tmp_path, stores, book("B", ("One line.", "Two lines.", "Three lines.")))

    async def go() -> tuple[Run, BookReport]:
        async with NotingExecutor(note, lambda _options: AudioSynth(), stores, 2) as executor:
            work = Run(plans, executor, stores)
            (report,) = await work.execute()
            return work, report

    return asyncio.run(go())


def test_a_run_whose_governors_are_elsewhere_shows_and_reports_the_limit_its_results_carry(tmp_path: Path) -> None:
    work, report = run_noting(tmp_path, RateNote(60.0, "config", throttled=True))
    assert report.rate.limit_rpm == 60.0 and report.rate.limit_source == "config"
    status = work.rate_status()  # the progress line's words, as the run ends
    assert status is not None
    assert status.startswith("held back by the rate limit: ") and status.endswith("(limit 60/min from config)")
    # Three answers in a run a fraction of a second old: counted, not extrapolated to thousands a minute.
    assert status.startswith("held back by the rate limit: 3 in the first 0 s ")

    work, report = run_noting(tmp_path / "free", RateNote(60.0, "headers", throttled=False))
    assert report.rate.limit_rpm == 60.0 and report.rate.limit_source == "headers"
    assert work.rate_status() is None  # a limit that holds nothing back is not news on the progress line


def test_a_part_another_store_holds_is_copied_not_bought_again(tmp_path: Path) -> None:
    # A batch whose books keep their parts apart: a part found in, or requested into, one book's store serves
    # a book of another store too (copied there before its chapter is assembled), and is paid for once.
    stores = Stores()
    shared = book("Shared", ("Common line.", "Only shared."))
    (done,) = run(plans_for(tmp_path, stores, shared), stores, AudioSynth())
    assert done.status == BookStatus.DONE
    own = settings(tmp_path).replace(cache_dir=tmp_path / "own")
    other = book("Other", ("Common line.", "Only other."), ("Only shared.", "Last line."))
    third = book("Third", ("Last line.",))
    plans = [
        plan_book(other, own, tmp_path / "other", stores.at(tmp_path / "own")),
        plan_book(third, settings(tmp_path), tmp_path / "third", stores.at(tmp_path / "cache")),
    ]
    synth = AudioSynth()
    reports = run(plans, stores, synth)
    assert sorted(synth.calls) == ["Last line.", "Only other."]
    assert [r.status for r in reports] == [BookStatus.DONE, BookStatus.DONE]
    own_store, main_store = stores.at(tmp_path / "own"), stores.at(tmp_path / "cache")
    for chapter in plans[0].chapters:
        assert all(own_store.has(key, "mp3") for key in chapter.keys)  # the next run plans every part as kept
    assert all(main_store.has(key, "mp3") for key in plans[1].chapters[0].keys)


class SlowDiskStore(FileStore):
    """A folder whose writes wait until ``release`` is set, as a slow disk's fsync does under load."""

    def __init__(self, root: Path, release: threading.Event):
        super().__init__(root)
        self.release = release

    def put(self, key: str, data: bytes, fmt: str = "mp3") -> None:
        self.release.wait(timeout=60)
        super().put(key, data, fmt)


def test_answers_do_not_pile_up_in_memory_behind_a_slow_store(tmp_path: Path) -> None:
    # Memory stays that of a few answers whatever the book's size: a worker sends its next request while its
    # last answer is written, but never a third while that write has not finished.
    release = threading.Event()
    stores = Stores()
    stores._open[str(tmp_path / "cache")] = SlowDiskStore(tmp_path / "cache", release)
    b = book("B", tuple(f"Line {i}." for i in range(30)))
    sent_while_blocked: list[int] = []

    class CountingSynth(AudioSynth):
        async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
            if not release.is_set():
                sent_while_blocked.append(1)
            return await super().synthesize(text, spec)

    synth = CountingSynth()
    timer = threading.Timer(0.5, release.set)  # only ends the wait; the bound below holds at any speed
    timer.start()
    try:
        (report,) = run(plans_for(tmp_path, stores, b), stores, synth, concurrency=3)
    finally:
        timer.cancel()
        release.set()
    assert report.status == BookStatus.DONE and len(synth.calls) == 30
    assert len(sent_while_blocked) <= 2 * 3  # one answer being written and one on its way, per worker
