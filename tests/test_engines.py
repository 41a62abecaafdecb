"""The local executor on its own: part requests in, part results out, with a fake synthesizer."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.engines import failure
from pipeline.engines.local import LocalExecutor
from pipeline.errors import AuthError, BadRequestError, QuotaError, RetryableError, SynthesisError
from pipeline.models import BackendOptions, ErrorKind, PartRequest, PartResult, PartStatus, SpeechResult, VoiceSpec
from pipeline.store import FileStore, Stores

SPEC = VoiceSpec("tts-1", "alloy")
BACKEND = BackendOptions()


class FakeSynth:
    """Answers ``b"ID3 <text>"`` after ``delay`` seconds, or raises what ``fail`` returns for a text."""

    def __init__(self, delay: float = 0.0, fail: Callable[[str], SynthesisError | None] = lambda _: None):
        self.delay = delay
        self.fail = fail
        self.calls: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.on_call: Callable[[int], None] = lambda _n: None

    def identity(self) -> str:
        return "fake"

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        self.calls.append(text)
        self.on_call(len(self.calls))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        error = self.fail(text)
        if error is not None:
            raise error
        return SpeechResult(b"ID3 " + text.encode(), attempts=1)

    async def aclose(self) -> None:
        pass


def requests(store: Path, count: int) -> list[PartRequest]:
    return [PartRequest(f"k{i:03d}", f"text {i}", SPEC, BACKEND, str(store)) for i in range(count)]


def run(
    synth: FakeSynth, todo: list[PartRequest], concurrency: int, stores: Stores | None = None
) -> tuple[list[PartResult], LocalExecutor]:
    stores = stores or Stores()
    results: list[PartResult] = []

    async def go() -> LocalExecutor:
        async with LocalExecutor(lambda _options: synth, stores, concurrency) as executor:
            await executor.run(iter(todo), results.append)
            return executor

    return results, asyncio.run(go())


def test_requests_are_made_in_order_and_every_part_is_stored(tmp_path: Path) -> None:
    synth = FakeSynth()
    todo = requests(tmp_path, 5)
    results, executor = run(synth, todo, concurrency=1)
    assert synth.calls == [r.text for r in todo]
    # Parts are stored in the background while the next request goes out, so they may land out of order.
    assert sorted(r.key for r in results) == [r.key for r in todo]
    assert all(r.status == PartStatus.STORED and r.attempts == 1 and r.characters == 6 for r in results)
    store = Stores().at(tmp_path)
    assert all(store.get(r.key, "mp3") == b"ID3 " + r.text.encode() for r in todo)
    assert executor.interrupted is None


def test_never_more_in_flight_than_the_concurrency_and_all_of_it_used(tmp_path: Path) -> None:
    synth = FakeSynth(delay=0.02)
    results, _ = run(synth, requests(tmp_path, 30), concurrency=6)
    assert synth.max_in_flight == 6 and len(results) == 30


def test_a_part_already_stored_is_not_requested(tmp_path: Path) -> None:
    stores = Stores()
    todo = requests(tmp_path, 3)
    stores.at(tmp_path).put(todo[1].key, b"ID3 made earlier", "mp3")
    synth = FakeSynth()
    results, _ = run(synth, todo, 2, stores)
    # Two workers look in the store in threads at once, so which of them sends first is not fixed.
    assert sorted(synth.calls) == ["text 0", "text 2"]
    assert {r.key: r.status for r in results}[todo[1].key] == PartStatus.CACHED


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (RetryableError("503 after 3 attempts", attempts=3), PartStatus.FAILED, None),
        (AuthError("401 bad key"), PartStatus.REFUSED, ErrorKind.AUTH),
        (QuotaError("no credit"), PartStatus.REFUSED, ErrorKind.QUOTA),
        (BadRequestError("unknown voice"), PartStatus.REFUSED, ErrorKind.BAD_REQUEST),
    ],
)
def test_a_failing_part_is_a_typed_result_and_the_others_go_on(
    tmp_path: Path, error: SynthesisError, status: PartStatus, kind: ErrorKind | None
) -> None:
    synth = FakeSynth(fail=lambda text: error if text == "text 1" else None)
    results, _ = run(synth, requests(tmp_path, 3), concurrency=1)
    by_key = {r.key: r for r in results}
    assert by_key["k001"].status == status and by_key["k001"].error_kind == kind
    assert by_key["k001"].attempts == error.attempts and by_key["k001"].error == str(error)
    assert by_key["k000"].ok and by_key["k002"].ok
    assert failure(requests(tmp_path, 1)[0], error).status == status
    assert (kind is not None and kind.stops_run) == isinstance(error, AuthError | QuotaError)


def test_stop_takes_no_new_request_and_lets_those_in_flight_land(tmp_path: Path) -> None:
    synth = FakeSynth(delay=0.05)
    stores = Stores()
    todo = requests(tmp_path, 20)
    results: list[PartResult] = []

    async def go() -> None:
        async with LocalExecutor(lambda _options: synth, stores, 4) as executor:
            synth.on_call = lambda n: executor.stop("enough") if n == 6 else None
            await executor.run(iter(todo), results.append)

    asyncio.run(go())
    assert len(synth.calls) == 6  # the sixth was already on its way when stop came
    assert len(results) == 6 and all(r.status == PartStatus.STORED for r in results)
    assert all(stores.at(tmp_path).has(r.key, "mp3") for r in results)


def test_a_stop_while_a_worker_looks_in_the_store_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Looking in a bucket is awaited in a thread (it is a request), so a stop can land meanwhile: then the part
    # it was looking for is not requested, as no part is after a stop. (A folder standing in for a bucket.)
    looking, release = threading.Event(), threading.Event()
    monkeypatch.setattr(FileStore, "remote", True)

    def slow_has(self: FileStore, key: str, fmt: str = "mp3") -> bool:
        looking.set()
        release.wait(10)
        return False

    monkeypatch.setattr(FileStore, "has", slow_has)
    synth = FakeSynth()
    results: list[PartResult] = []

    async def go() -> None:
        async with LocalExecutor(lambda _options: synth, Stores(), 1) as executor:
            running = asyncio.create_task(executor.run(iter(requests(tmp_path, 3)), results.append))
            await asyncio.to_thread(looking.wait, 10)
            executor.stop("enough")
            release.set()
            await running

    asyncio.run(go())
    assert synth.calls == [] and results == []


def test_abandon_cancels_the_requests_in_flight(tmp_path: Path) -> None:
    synth = FakeSynth(delay=0.05)
    results: list[PartResult] = []

    async def go() -> None:
        async with LocalExecutor(lambda _options: synth, Stores(), 4) as executor:
            synth.on_call = lambda n: executor.stop("the key was refused", abandon=True) if n == 4 else None
            await executor.run(iter(requests(tmp_path, 20)), results.append)

    asyncio.run(go())
    assert len(synth.calls) == 4 and results == []


def test_sigint_interrupts_and_a_second_one_abandons(tmp_path: Path) -> None:
    synth = FakeSynth(delay=0.05)
    results: list[PartResult] = []
    synth.on_call = lambda n: os.kill(os.getpid(), signal.SIGINT) if n == 3 else None
    results, executor = run(synth, requests(tmp_path, 20), concurrency=3)
    assert executor.interrupted == "SIGINT"
    assert len(synth.calls) == 3 and len(results) == 3  # the three in flight landed

    synth = FakeSynth(delay=0.05)
    synth.on_call = lambda n: os.kill(os.getpid(), signal.SIGINT) if n in (3, 4) else None
    results, executor = run(synth, requests(tmp_path / "b", 20), concurrency=4)
    assert executor.interrupted == "SIGINT" and results == []


def test_a_store_that_cannot_keep_parts_is_a_run_stopping_result(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's folder should be")
    results, _ = run(FakeSynth(), requests(blocked, 1), concurrency=1)
    (result,) = results
    assert result.status == PartStatus.FAILED and result.error_kind == ErrorKind.STORE
    assert result.error_kind.stops_run and "cannot store audio" in (result.error or "")
    assert result.attempts == 1 and result.characters == 6  # it was paid for


def test_requests_are_pulled_only_when_there_is_room(tmp_path: Path) -> None:
    # The run filters what it hands over at the moment a worker is free (a book stopped meanwhile).
    pulled: list[str] = []
    synth = FakeSynth(delay=0.01)

    def lazy() -> Iterator[PartRequest]:
        for request in requests(tmp_path, 10):
            pulled.append(request.key)
            yield request

    async def go() -> None:
        async with LocalExecutor(lambda _options: synth, Stores(), 2) as executor:
            synth.on_call = lambda n: executor.stop("enough") if n == 4 else None
            await executor.run(lazy(), lambda _r: None)

    asyncio.run(go())
    assert len(pulled) == 4  # not the whole list up front


def test_making_a_part_is_written_once_and_both_engines_call_it(tmp_path: Path) -> None:
    # What verification will check sits in one place: every executor makes a part through make_part and
    # keeps it through keep_part.
    import inspect

    from pipeline.engines import keep_part, make_part
    from pipeline.engines import local as local_engine

    celery_engine = pytest.importorskip("pipeline.engines.celery", reason="the 'distributed' extra")
    for module in (local_engine, celery_engine):
        assert module.make_part is make_part and module.keep_part is keep_part
        source = inspect.getsource(module)
        assert "synthesize(" not in source and ".put(" not in source, f"{module.__name__} makes parts itself"

    (request,) = requests(tmp_path, 1)
    made = asyncio.run(make_part(FakeSynth(), request))
    assert not isinstance(made, PartResult) and made.audio == b"ID3 text 0"
    assert keep_part(Stores().at(tmp_path), request, made) == PartResult("k000", PartStatus.STORED, 1, 6)
    assert Stores().at(tmp_path).get("k000", "mp3") == b"ID3 text 0"
    refused = asyncio.run(make_part(FakeSynth(fail=lambda _t: AuthError("401 bad key")), request))
    assert isinstance(refused, PartResult) and refused.error_kind == ErrorKind.AUTH
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's folder should be")
    kept = keep_part(Stores().at(blocked), request, made, " on worker w1")
    assert kept.error_kind == ErrorKind.STORE and "on worker w1" in (kept.error or "") and kept.attempts == 1
