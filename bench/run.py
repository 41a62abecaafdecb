"""`make bench`: measure the pipeline's synthesis pool, batch pool, chunker, assembler and offline voice.

Every figure is measured on this machine, never assumed. The speech server is ``tests.fakeserver`` in its own
process (so its work does not share the client's GIL), answering real MP3 after a fixed latency over real
HTTP. Results print as a table and go to ``bench-output/bench.json``.

    .venv/bin/python bench/run.py [--quick] [--latency 0.2] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import io
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/run.py` from anywhere
    sys.path.insert(0, str(REPO))

from bench import articles as article_bench  # noqa: E402  (before XDG_CACHE_HOME moves: it finds the pages)
from pipeline import app, assembly, mp3  # noqa: E402
from pipeline.chunker import chunk_book  # noqa: E402
from pipeline.config import RunOptions, Settings, load_settings  # noqa: E402
from pipeline.models import Book, Chapter, Pause, Segment, VoiceSpec  # noqa: E402
from pipeline.planning import BookPlan  # noqa: E402
from pipeline.progress import Progress  # noqa: E402
from pipeline.readers import read_book  # noqa: E402
from pipeline.report import BookReport, BookStatus  # noqa: E402
from pipeline.store import Stores  # noqa: E402

T = TypeVar("T")
SECTIONS = (
    *("synthesis", "batch", "rate", "chunking", "assembly", "voice", "distributed", "memory", "verify"),
    "articles",
)
API_KEY = "bench-key"
KEY_ENV = "AUDIOBOOK_BENCH_API_KEY"  # the variable Settings.api_key_env names for the fake server's key
MS_PER_CHAR = 50.0  # audio per character the fake server answers: ~13 characters a second, as real speech
SEGMENT_CHARS = 300  # a typical segment (max_chars is 500): ~15 s of audio, ~240 kB of MP3 per answer
CORPUS_BOOK = REPO.parent / "shared" / "corpus" / "alice-pg11.txt"
SAMPLE_BOOK = REPO / "samples" / "the-lantern-keeper.md"
FALLBACK_CHARS = 150_000
OUT_JSON = REPO / "bench-output" / "bench.json"
PROSE = (
    "the keeper climbed the narrow stair each evening and wound the brass clock while gulls turned over the "
    "grey water and the lamp threw its long pale arm across the rocks where ships had broken long ago"
)
WORDS = PROSE.split()


@dataclass(frozen=True)
class Config:
    quick: bool
    latency: float
    rounds: int  # rounds of `concurrency` requests per synthesis measurement
    min_requests: int
    concurrencies: tuple[int, ...]
    batch_articles: int
    batch_concurrency: int
    chunk_runs: int
    assembly_minutes: tuple[float, float]  # a short and a long chapter: the difference gives memory per hour
    lossless_minutes: tuple[float, float]  # the same for the lossless join, which is far faster
    espeak_segments: int

    @classmethod
    def make(cls, quick: bool, latency: float) -> Config:
        if quick:
            return cls(quick, latency, 5, 10, (1, 4, 16), 20, 8, 2, (3.0, 10.0), (10.0, 30.0), 2)
        return cls(quick, latency, 10, 20, (1, 4, 16), 20, 8, 5, (10.0, 30.0), (30.0, 120.0), 4)


# ------------------------------------------------------------------------------------------ helpers


def _text(tag: str, n: int, chars: int = SEGMENT_CHARS) -> str:
    """A distinct English paragraph of about ``chars`` characters: a few sentences, one segment."""
    words = [f"Passage {tag} {n}."]
    i = n
    while sum(len(w) + 1 for w in words) < chars - 20:
        sentence = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(9))
        words.append(sentence[0].upper() + sentence[1:] + ".")
        i += 7
    return " ".join(words)


def _settings(url: str, cache_dir: Path, concurrency: int, **more: Any) -> Settings:
    # env={}: the user's AUDIOBOOK_* variables or config must not change what is measured.
    return load_settings(
        env={},
        overrides={
            "base_url": url,
            "api_key_env": KEY_ENV,
            "concurrency": concurrency,
            "cache_dir": cache_dir,
            "announce_titles": False,
            # Off in the other sections, so their figures stay comparable with earlier runs; the verify section
            # measures what it costs.
            "verify": "off",
            **more,
        },
    )


class PhaseTimer(Progress):
    """Times the synthesis phase of a run and nothing else.

    The run calls ``start()`` once the plan is queued, just before the executor starts its workers, and
    ``advance()`` after each part has been written to the store. So [start, last advance] runs from before the
    first request to the last part stored. Chapter assembly is not in it: the one-chapter synthesis runs only
    fill the store, and in the batch the last article's assembly starts after the last part (earlier articles
    are assembled while requests are still in flight, as in a real batch, and that load is counted).
    """

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.started: float | None = None
        self.last: float | None = None
        self.cpu_started = self.cpu_last = 0.0  # this process's CPU time (all threads) at the same moments
        self.answers = 0

    def start(self, total_chars: int, done_chars: int, requests: int) -> None:
        super().start(total_chars, done_chars, requests)
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()

    def advance(self, chars: int) -> None:
        super().advance(chars)
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()
        self.answers += 1

    @property
    def seconds(self) -> float:
        if self.started is None or self.last is None:
            raise RuntimeError("the run made no progress: nothing was synthesized")
        return self.last - self.started

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_last - self.cpu_started


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so the `finally` blocks stop the server and remove the temporary folders."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def _die_with_parent() -> None:
    """In a child before exec (Linux): get SIGTERM when the benchmark dies, even by SIGKILL, so no fake server
    outlives it. Elsewhere a no-op; the `finally` blocks still stop the children on a normal exit."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@dataclass
class ServerHandle:
    url: str
    stats: dict[str, float] = field(default_factory=dict)  # filled in when the server has exited


def _cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


@contextlib.contextmanager
def fake_server(latency: float, ms_per_char: float = MS_PER_CHAR, extra: Sequence[str] = ()) -> Iterator[ServerHandle]:
    """``tests.fakeserver`` in its own process; stopped with SIGTERM (killed if it lingers), whatever happens.
    ``stats`` then holds its request count, the most requests it had in flight and the CPU it spent serving."""
    cmd = [sys.executable, "-m", "tests.fakeserver", "--port", "0", "--latency", str(latency),
           "--api-key", API_KEY, "--ms-per-char", str(ms_per_char), *extra]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
    )
    handle: ServerHandle | None = None
    cpu_start = cpu_end = None
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the fake server did not start: {proc.stderr.read() if proc.stderr else ''}")
        handle = ServerHandle(url)
        cpu_start = _cpu_of(proc.pid)
        yield handle
        cpu_end = _cpu_of(proc.pid)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        # Its last words: "fakeserver: N requests, M served, max K in flight".
        found = re.search(r"(\d+) requests, (\d+) served, max (\d+) in flight", err or "")
        if handle is not None and found:
            handle.stats = dict(zip(("requests", "served", "max_in_flight"), map(int, found.groups()), strict=True))
        if handle is not None and cpu_start is not None and cpu_end is not None:
            handle.stats["cpu_s"] = cpu_end - cpu_start


def _run_pool(
    plans: Sequence[BookPlan], stores: Stores, concurrency: int, *, assemble: bool, run: RunOptions | None = None
) -> tuple[PhaseTimer, tuple[BookReport, ...]]:
    """The plans through ``app.convert``, as the CLI runs them; ``assemble=False`` only fills the store."""
    timer = PhaseTimer()
    run = run or RunOptions(concurrency)
    result = app.convert(plans, run, stores=stores, progress=timer, assemble=assemble)
    _exit_on_sigterm()  # the run's own handler is gone now; put ours back
    if result.interrupted:
        sys.exit(f"benchmark interrupted by {result.interrupted}")
    for r in result.reports:
        # Without assembly no chapter is written, so "clean" means every part made at the first attempt.
        clean = r.status == BookStatus.DONE if assemble else (not r.failures and not r.error)
        if not clean or r.retries or r.synthesized != r.plan["requests_needed"]:
            raise RuntimeError(f"benchmark run not clean: status {r.status}, {r.retries} retries, {r.problem()}")
    return timer, result.reports


def _efficiency(
    requests: int, latency: float, concurrency: int, timer: PhaseTimer, server: ServerHandle
) -> dict[str, Any]:
    ideal = requests * latency / concurrency
    server_cpu = server.stats.get("cpu_s")
    return {
        "requests": requests,
        "concurrency": concurrency,
        "latency_s": latency,
        "ideal_s": round(ideal, 4),
        "measured_s": round(timer.seconds, 4),
        "efficiency": round(ideal / timer.seconds, 4),
        "max_in_flight": server.stats.get("max_in_flight"),
        # CPU per request, to tell a slow pipeline from a busy machine: client = this process during the
        # window; server = the fake server's whole life (it does nothing but serve these requests).
        "client_cpu_ms_per_request": round(timer.cpu_seconds * 1000 / requests, 2),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / requests, 2) if server_cpu is not None else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# ------------------------------------------------------------------------------------------ measurements


def measure_synthesis(cfg: Config, concurrency: int) -> dict[str, Any]:
    """One chapter of distinct segments through the run + OpenAISpeech, fresh store: every segment a request.
    Only the store is filled: assembling 40 minutes of audio would add ~15 s a run outside the measured window."""
    count = max(cfg.min_requests, cfg.rounds * concurrency)
    tag = uuid.uuid4().hex[:8]
    book = Book("Bench", (Chapter(1, "Bench", tuple(_text(tag, i) for i in range(count))),), language="en")
    with fake_server(cfg.latency) as srv, tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        settings = _settings(srv.url, Path(tmp) / "cache", concurrency, pack=False)  # a request a paragraph
        stores = Stores()
        plan = app.plan(book, settings, Path(tmp) / "out", stores)
        if plan.segments != count:
            raise RuntimeError(f"expected {count} segments, the chunker made {plan.segments}")
        timer, (report,) = _run_pool([plan], stores, concurrency, assemble=False)
    return _efficiency(report.requests, cfg.latency, concurrency, timer, srv)


def measure_bare_http(cfg: Config, concurrency: int) -> dict[str, Any]:
    """The ceiling this machine allows right now: the same requests with a bare httpx client (no pipeline, no
    cache, client built before the clock starts) against the same kind of server. The pipeline's figure is
    judged against it: what the bare client also loses is the machine's (or the fake server's), not ours."""
    import httpx

    count = max(cfg.min_requests, cfg.rounds * concurrency)
    tag = uuid.uuid4().hex[:8]
    todo = [_text(tag, i) for i in reversed(range(count))]

    async def run(url: str) -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:

            async def worker() -> None:
                while todo:
                    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": todo.pop()}
                    response = await client.post(url + "/audio/speech", json=body)
                    if response.status_code != 200 or not response.content:
                        raise RuntimeError(f"bare request failed: HTTP {response.status_code}")

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0

    with fake_server(cfg.latency) as srv:
        seconds = asyncio.run(run(srv.url))
    ideal = count * cfg.latency / concurrency
    return {
        "requests": count,
        "concurrency": concurrency,
        "ideal_s": round(ideal, 4),
        "measured_s": round(seconds, 4),
        "efficiency": round(ideal / seconds, 4),
        "max_in_flight": srv.stats.get("max_in_flight"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def measure_batch(cfg: Config) -> dict[str, Any]:
    """Short articles (1 or 2 segments) through one run: one shared pool, one shared synthesizer."""
    tag = uuid.uuid4().hex[:8]
    books = []
    for a in range(cfg.batch_articles):
        paragraphs = tuple(_text(f"{tag}-{a}", p, 200) for p in range(2 if a % 5 < 3 else 1))
        books.append(Book(f"Article {a}", (Chapter(1, f"Article {a}", paragraphs),), language="en"))
    with fake_server(cfg.latency) as srv, tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        settings = _settings(srv.url, Path(tmp) / "cache", cfg.batch_concurrency, pack=False)  # the pool, not packing
        stores = Stores()
        plans = [app.plan(b, settings, Path(tmp) / f"article-{i:02d}", stores) for i, b in enumerate(books)]
        timer, reports = _run_pool(plans, stores, cfg.batch_concurrency, assemble=True)
    result = _efficiency(sum(r.requests for r in reports), cfg.latency, cfg.batch_concurrency, timer, srv)
    result["articles"] = len(books)
    return result


@dataclass(frozen=True)
class RateScenario:
    name: str
    rpm: float  # the fake key's limit
    burst: float  # its bucket
    headers: bool  # whether the server advertises it in x-ratelimit-* headers
    requests: int
    concurrency: int = 16
    configured_rpm: float | None = None  # what the user's config says, if anything
    again: bool = False  # also a second run (another book, same key) once the bucket has refilled
    first_contact: bool = False  # reported on a line of its own: a key met for the first time, limit in headers


def _rate_run(cfg: Config, sc: RateScenario, srv: Any, tmp: Path, name: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    book = Book("Rate", (Chapter(1, "Rate", tuple(_text(tag, i, 120) for i in range(sc.requests))),), language="en")
    more = {"rpm": sc.configured_rpm} if sc.configured_rpm else {}
    # A request a paragraph: this measures the pacing, so the book is `sc.requests` requests, packing aside.
    settings = _settings(srv.url, tmp / "cache", sc.concurrency, pack=False, **more)
    stores = Stores()
    plan = app.plan(book, settings, tmp / f"out-{tag}", stores)
    if plan.segments != sc.requests:
        raise RuntimeError(f"expected {sc.requests} segments, the chunker made {plan.segments}")
    seen = len(srv.requests)
    timer, (report,) = _run_pool([plan], stores, sc.concurrency, assemble=False)
    records = list(srv.requests)[seen:]
    first_answer = min(r.time for r in records if r.status == 200) + cfg.latency
    refused = [r for r in records if r.status == 429]
    ideal = sc.requests / (sc.rpm / 60)
    return {
        "scenario": name,
        "rpm": sc.rpm,
        "burst": sc.burst,
        "headers": sc.headers,
        "configured_rpm": sc.configured_rpm,
        "concurrency": sc.concurrency,
        "requests": sc.requests,
        "sent": len(records),
        "rate_limited": len(refused),
        "rate_limited_share": round(len(refused) / len(records), 4),
        "late_rate_limited": sum(r.time > first_answer for r in refused),
        "retries": report.retries,
        "ideal_s": round(ideal, 2),
        "measured_s": round(timer.seconds, 2),
        "x_ideal": round(timer.seconds / ideal, 3),
        "limit_used": round(sc.requests / timer.seconds / (sc.rpm / 60), 3),
        "limit_known": report.rate.limit_rpm if report.rate else None,
        "limit_source": report.rate.limit_source if report.rate else None,
        "first_contact": sc.first_contact,
    }


def measure_rate_limit(cfg: Config, sc: RateScenario) -> list[dict[str, Any]]:
    """A book of ``sc.requests`` distinct segments against a key limited to ``sc.rpm`` a minute.

    The fake server runs in this process (a thread) so every request's arrival time and status can be read
    back; at these rates the client is idle most of the time, so sharing the GIL costs nothing measurable.
    Ideal wall time is requests / rate; "late" 429s are those of requests that arrived after the first answer
    (by then the client could have read the headers). With ``again``, a second book follows on the same key
    once its bucket is full again: what a run gains from the limit an earlier run read in the headers."""
    from tests.fakeserver import FakeSpeechServer

    rows = []
    with (
        FakeSpeechServer(API_KEY, latency=cfg.latency, rpm=sc.rpm, burst=sc.burst, rate_headers=sc.headers) as srv,
        tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp,
    ):
        rows.append(_rate_run(cfg, sc, srv, Path(tmp), sc.name + (", first run" if sc.again else "")))
        if sc.again:
            time.sleep(sc.burst * 60 / sc.rpm + 1)  # the bucket refills, as between two nightly runs
            rows.append(_rate_run(cfg, sc, srv, Path(tmp), sc.name + ", next run"))
    return rows


def _rate_scenarios(cfg: Config) -> list[RateScenario]:
    scale = 2 if cfg.quick else 1  # quick: half the requests (each 60/min run is a minute long in full)
    return [
        RateScenario("60/min b5, rpm = 60 in the config", 60, 5, False, 60 // scale, configured_rpm=60),
        RateScenario("60/min b5, advertised", 60, 5, True, 60 // scale, again=True),
        RateScenario("600/min b10, advertised", 600, 10, True, 240 // scale),
        # Issue 20 item 10: 16 at once before any header was read had 11 of 87 refused (12.6 %).
        RateScenario("120/min b5, advertised, first contact", 120, 5, True, 76 // scale, first_contact=True),
    ]


def measure_end_to_end(cfg: Config) -> dict[str, Any]:
    """A whole book as `audiobook convert` runs it (assembly included) against the fake server in its own
    process: the wall time of the run against its synthesis span (first request to last part stored). The
    difference is assembly, M4B aside, that did not overlap the requests."""
    book, source = _chunking_book()
    with fake_server(cfg.latency) as srv, tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        settings = _settings(srv.url, Path(tmp) / "cache", 16, announce_titles=True)
        stores = Stores()
        plan = app.plan(book, settings, Path(tmp) / "out", stores)
        t0 = time.perf_counter()
        timer, (report,) = _run_pool([plan], stores, 16, assemble=True)
        wall = time.perf_counter() - t0
    return {
        "source": source,
        "requests": report.requests,
        "audio_s": report.duration_s,
        "synthesis_s": round(timer.seconds, 2),
        "wall_s": round(wall, 2),
        "x_synthesis": round(wall / timer.seconds, 3),
        "ideal_s": round(report.requests * cfg.latency / 16, 2),
    }


def measure_requests(cfg: Config) -> list[dict[str, Any]]:
    """Requests per book against the ideal (Σ over chapters of ⌈characters / max_chars⌉, plus spoken titles),
    packed and a paragraph at a time, and what editing one paragraph re-pays (new segment texts per edit)."""
    from tests.chunk_measures import FEWEST, chinese_book, dialogue_book, edit_changes, ideal_requests

    books: list[tuple[str, Book]] = [("synthetic dialogue-heavy book", dialogue_book()), ("synthetic Chinese book",
                                     chinese_book())]  # fmt: skip
    if CORPUS_BOOK.is_file():
        books.insert(0, (f"corpus: {CORPUS_BOOK.name}", read_book(CORPUS_BOOK)))
    rows = []
    for name, book in books:
        ideal = ideal_requests(book, 500, announce_titles=True)

        def count(**kw: Any) -> int:
            return sum(len(c) for c in chunk_book(book, 500, announce_titles=True, **kw))  # noqa: B023

        changes = [n for ns in edit_changes(book, 500, sample=15 if cfg.quick else None).values() for n in ns]
        rows.append(
            {
                "book": name,
                "characters": book.characters,
                "ideal": ideal,
                "packed": count(),
                "fewest_whole_sentences": count(packing=FEWEST),
                "per_paragraph": count(pack=False),
                "edits": len(changes),
                "edit_mean": round(sum(changes) / len(changes), 2),
                "edit_max": max(changes),
                "edits_over_6": round(sum(n > 6 for n in changes) / len(changes), 4),
            }
        )
    return rows


def _chunking_book() -> tuple[Book, str]:
    if CORPUS_BOOK.is_file():
        return read_book(CORPUS_BOOK), str(CORPUS_BOOK.relative_to(REPO.parent))
    sample = read_book(SAMPLE_BOOK)
    copies = math.ceil(FALLBACK_CHARS / max(1, sample.characters))
    chapters = tuple(
        Chapter(len(sample.chapters) * k + c.index, c.title, c.paragraphs)
        for k in range(copies)
        for c in sample.chapters
    )
    return Book(sample.title, chapters, language=sample.language), f"{SAMPLE_BOOK.name} x{copies} (corpus absent)"


def measure_chunking(cfg: Config) -> dict[str, Any]:
    """chunk_book on a whole book (already read): best of a few runs, in characters per second."""
    book, source = _chunking_book()
    best = math.inf
    segments = 0
    for _ in range(cfg.chunk_runs):
        t0 = time.perf_counter()
        chunked = chunk_book(book, 500, announce_titles=True)
        best = min(best, time.perf_counter() - t0)
        segments = sum(len(c) for c in chunked)
    return {
        "source": source,
        "characters": book.characters,
        "chapters": len(book.chapters),
        "segments": segments,
        "runs": cfg.chunk_runs,
        "best_s": round(best, 4),
        "chars_per_s": round(book.characters / best),
    }


def _assembly_segments(count: int) -> tuple[Segment, ...]:
    # Paragraphs of three segments: the pauses are the usual mix of sentence and paragraph gaps.
    return tuple(
        Segment(1, i, _text("asm", i), Pause.PARAGRAPH if i % 3 == 2 else Pause.SENTENCE) for i in range(count)
    )


def _status_kb(pid: int | str, field_name: str) -> int | None:
    """A ``Vm*`` figure (kB) from /proc/<pid>/status; None when unavailable (no /proc, process gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) if found else None


def _children() -> list[int]:
    """This process's live children, from /proc (every thread's list: a child belongs to the thread that
    started it, and ffmpeg decoders are started from a helper thread)."""
    pids: list[int] = []
    for listing in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in listing.read_text().split()]
    return pids


class TreeMemory:
    """Samples the RSS of this process plus its live children, to find the tree's peak.

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` cannot be used for ffmpeg: Linux folds the parent's peak RSS at
    the moment of exec into the child's, so it reports Python's size, not ffmpeg's. Instead a thread lists the
    children from /proc every ``interval`` seconds and reads their RSS. Python's own peak is exact (VmHWM); the
    children's and the sum are sampled, so a spike shorter than ``interval`` can be missed.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.pids: set[int] = set()  # every child seen
        self.peak_total_kb = 0  # python + live children, at the worst sample
        self.peak_child_kb = 0  # the largest any one child got (its VmHWM)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            total = _status_kb("self", "VmRSS") or 0
            for pid in _children():
                self.pids.add(pid)
                total += _status_kb(pid, "VmRSS") or 0
                self.peak_child_kb = max(self.peak_child_kb, _status_kb(pid, "VmHWM") or 0)
            self.peak_total_kb = max(self.peak_total_kb, total)

    @contextlib.contextmanager
    def watching(self) -> Iterator[TreeMemory]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


# How each way of joining is asked for: the parts are what the API answers (24 kHz, 128 kbps).
ASSEMBLY_MODES = {
    "lossless": {},  # the default where the parts allow it
    "decoded": {"bitrate": "96k"},  # another bitrate than the parts': every part decoded, the chapter encoded once
    # Every part decoded and measured, trimmed and brought to -18 LUFS; the encoder limits (2x oversampled) and
    # encodes at LAME quality 7 (assembly.LEVELLED_MP3_QUALITY).
    "loudness": {"loudness": "ebu"},
}
# What the parts say: the fake server's quiet tone, or speech from the offline voice (eSpeak NG) with every third
# part 8 dB quieter, as answers to separate requests can be. Speech costs LAME more than a tone and has the
# peaks that make the limiter work; tone parts keep the figures comparable with earlier runs.
ASSEMBLY_RUNS = (("lossless", "tone"), ("decoded", "tone"), ("loudness", "tone"), ("decoded", "speech"),
                 ("loudness", "speech"))  # fmt: skip


def assembly_child(parts_dir: Path, count: int, out_dir: Path, mode: str) -> None:
    """Runs in its own process (``--assembly-child``), so its memory is the assembly's alone."""
    segments = _assembly_segments(count)
    parts = [(parts_dir / f"{i:04d}.mp3").read_bytes for i in range(count)]
    chapter = Chapter(1, "Bench chapter", tuple(s.text for s in segments))
    book = Book("Bench", (chapter,), language="en")
    settings = load_settings(env={}, overrides=ASSEMBLY_MODES[mode]).book
    # "5" resets this process's peak RSS to its current RSS (Linux), so VmHWM afterwards is the assembly's peak.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start_kb = _status_kb("self", "VmRSS")
    with TreeMemory().watching() as tree:
        t0, cpu0 = time.perf_counter(), os.times()
        result = assembly.assemble_chapter(book, chapter, segments, parts, out_dir, settings, total_chapters=1)
        seconds, cpu1 = time.perf_counter() - t0, os.times()
    levels = result.loudness
    if (levels is not None) != bool(settings.loudness):
        raise RuntimeError(f"{mode}: the chapter was {'' if levels else 'not '}levelled")
    data = {
        "mode": mode,
        "seconds": seconds,
        "cpu_s": sum(cpu1[k] - cpu0[k] for k in range(4)),  # this process and its ffmpeg processes, user + system
        "lufs": levels.integrated_lufs if levels else None,  # the chapter as levelled (its estimate)
        "limited": levels.limited if levels else None,  # parts whose peaks the limiter took down
        "audio_s": result.duration_ms / 1000,
        "baseline_kb": start_kb,
        "self_kb": _status_kb("self", "VmHWM"),
        "child_kb": tree.peak_child_kb or None,
        "total_kb": tree.peak_total_kb or None,
        "children": len(tree.pids),
    }
    print(json.dumps(data))


def _assemble_once(parts_dir: Path, count: int, out_dir: Path, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--assembly-child", str(parts_dir), str(count),
           str(out_dir), mode]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False, preexec_fn=_die_with_parent
    )
    if proc.returncode != 0:
        raise RuntimeError(f"assembly child failed: {proc.stderr.strip()[-500:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["self_kb"] is None or data["total_kb"] is None:
        raise RuntimeError("memory figures need Linux's /proc; run the benchmark on Linux")
    return data


def _distinct_parts(source: str) -> list[bytes]:
    """Parts as the API answers them (24 kHz, 128 kbps MP3): the fake server's answer to a 500-character segment
    (~25 s of tone), or 16 passages of the offline voice's speech (~30 s each)."""
    from tests.fakeserver import audio_for

    if source == "tone":
        return [audio_for(_text("asm", 0, 500), MS_PER_CHAR)]
    from pipeline.assembly.loudness import apply_gain
    from pipeline.media import encode_pcm
    from pipeline.tts.espeak import engine

    voice = engine()
    speech = [voice.pcm(_text("asm", i, 500), "en-us", 175) for i in range(16)]
    pcm = [apply_gain(p, -8.0 if i % 3 == 2 else 0.0) for i, p in enumerate(speech)]
    return [encode_pcm(p, in_rate=voice.sample_rate) for p in pcm]


def measure_assembly(cfg: Config) -> dict[str, Any]:
    """assemble_chapter on MP3 parts of ~25-30 s, each way of joining at a short and a long chapter (the
    difference gives memory per hour of audio), on the fake server's tone and on the offline voice's speech."""
    runs: list[dict[str, Any]] = []
    lengths = {"lossless": cfg.lossless_minutes, "decoded": cfg.assembly_minutes, "loudness": cfg.assembly_minutes}
    with tempfile.TemporaryDirectory(prefix="bench-assembly-") as tmp:
        seconds_per_part: dict[str, float] = {}
        for source in dict.fromkeys(source for _, source in ASSEMBLY_RUNS):
            distinct = _distinct_parts(source)
            seconds_per_part[source] = sum(mp3.check_part(p).samples for p in distinct) / 24_000 / len(distinct)
            longest = max(max(lengths[mode]) for mode, s in ASSEMBLY_RUNS if s == source)
            (Path(tmp) / source).mkdir()
            for i in range(math.ceil(longest * 60 / seconds_per_part[source])):  # one file per part, as cached
                (Path(tmp) / source / f"{i:04d}.mp3").write_bytes(distinct[i % len(distinct)])
        for mode, source in ASSEMBLY_RUNS:
            for minutes in lengths[mode]:
                count = math.ceil(minutes * 60 / seconds_per_part[source])
                out = Path(tmp) / f"out-{mode}-{source}-{minutes:g}"
                raw = _assemble_once(Path(tmp) / source, count, out, mode)
                runs.append(
                    {
                        "mode": mode,
                        "parts_are": source,
                        "parts": count,
                        "audio_s": round(raw["audio_s"], 1),
                        "seconds": round(raw["seconds"], 3),
                        "x_realtime": round(raw["audio_s"] / raw["seconds"], 1),
                        "cpu_s": round(raw["cpu_s"], 2),  # on a busy machine, steadier than the wall time
                        "lufs": raw["lufs"],
                        "limited_parts": raw["limited"],
                        "python_start_mb": round(raw["baseline_kb"] / 1024, 1),
                        "python_peak_mb": round(raw["self_kb"] / 1024, 1),
                        "largest_ffmpeg_mb": round((raw["child_kb"] or 0) / 1024, 1),
                        "ffmpeg_processes": raw["children"],
                        "peak_mb": round(raw["total_kb"] / 1024, 1),  # python + its ffmpeg children, sampled
                        "load_average_1m": round(os.getloadavg()[0], 2),
                    }
                )
    growth: dict[str, float | None] = {}
    for mode, source in ASSEMBLY_RUNS:
        mine = [r for r in runs if r["mode"] == mode and r["parts_are"] == source]
        short, long = mine[0], mine[-1]
        hours = (long["audio_s"] - short["audio_s"]) / 3600
        label = f"{mode} ({source})"
        growth[label] = round((long["peak_mb"] - short["peak_mb"]) / hours, 1) if hours > 0 else None
    return {"runs": runs, "peak_growth_mb_per_audio_hour": growth}


ESPEAK_TEXTS = {
    "en": (
        "The lighthouse keeper climbed the narrow stair each evening, wound the brass clock, and watched the "
        "lamp throw its long pale arm across the water.",
        "Nobody in the village remembered a night when the light had failed, though many remembered the storm "
        "that tore the roof from the boathouse.",
        "She kept a ledger of every ship that passed, in a careful hand, with the hour and the weather beside it.",
        "When the fog came in from the sea, she rang the bell every half minute until morning.",
    ),
    "zh": (
        "灯塔看守人每天傍晚爬上狭窄的楼梯，给铜钟上好发条，看着灯光在水面上投下长长的苍白光臂。",
        "村里没有人记得灯光熄灭过的夜晚，但很多人记得那场掀翻船屋屋顶的暴风雨。",
        "她用工整的字迹记下每一艘经过的船，旁边写着时间和天气。",
        "雾从海上涌来的时候，她整夜每隔半分钟敲一次钟，直到天亮。",
    ),
}


def measure_espeak(cfg: Config) -> dict[str, Any]:
    """EspeakSynth.synthesize (eSpeak NG + MP3 encoding), one segment at a time, after one untimed warm-up."""
    from mutagen.mp3 import MP3

    from pipeline.tts.espeak import EspeakSynth

    synth = EspeakSynth()
    spec = VoiceSpec("offline", "alloy")
    out: dict[str, Any] = {}

    async def speak(texts: Sequence[str]) -> tuple[float, float]:
        await synth.synthesize("Warm up.", spec)
        audio_s = 0.0
        t0 = time.perf_counter()
        for text in texts:
            result = await synth.synthesize(text, spec)
            info = MP3(io.BytesIO(result.audio)).info
            if info is None:
                raise RuntimeError("the offline voice returned audio mutagen cannot read")
            audio_s += info.length
        return audio_s, time.perf_counter() - t0

    for language, texts in ESPEAK_TEXTS.items():
        chosen = texts[: cfg.espeak_segments]
        audio_s, seconds = asyncio.run(speak(chosen))
        out[language] = {
            "segments": len(chosen),
            "characters": sum(len(t) for t in chosen),
            "audio_s": round(audio_s, 2),
            "seconds": round(seconds, 3),
            "x_realtime": round(audio_s / seconds, 1),
        }
    return out


# ------------------------------------------------------------------------------------------ distributed


class _Cluster:
    """A redis-server of the benchmark's own and ``audiobook worker`` processes on it, each with ``threads``
    threads, the fake server's key in their environment and a cache folder of their own."""

    def __init__(self, root: Path, workers: int, threads: int):
        from tests.redisserver import RedisServer

        self.root, self.count, self.threads = root, workers, threads
        self.redis = RedisServer()
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> _Cluster:
        self.redis.start()
        try:
            for n in range(self.count):
                self._start(n)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, n: int) -> None:
        log = self.root / f"worker{n}.log"
        env = {**os.environ, KEY_ENV: API_KEY, "XDG_CACHE_HOME": str(self.root / f"worker{n}-cache")}
        env["PYTHONPATH"] = str(REPO)
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker", "--broker", self.redis.url, "--concurrency",
                 str(self.threads)], env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while b" ready: " not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log.read_text(errors='replace')[-1000:]}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return sum(_cpu_of(p.pid) or 0.0 for p in self.procs)

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.redis.stop()


def _distributed_missing() -> str | None:
    """Why the distributed section cannot run here, or None."""
    import importlib.util
    import shutil

    if shutil.which("redis-server") is None:
        return "redis-server not found: install Debian's redis-server package"
    if importlib.util.find_spec("celery") is None:
        return "celery not installed: pip install -e '.[distributed]'"
    return None


def _engine_run(cfg: Config, engine: str, latency: float) -> dict[str, Any]:
    concurrency, count = 16, max(cfg.min_requests, cfg.rounds * 16)
    tag = uuid.uuid4().hex[:8]
    book = Book("Bench", (Chapter(1, "Bench", tuple(_text(tag, i) for i in range(count))),), language="en")
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(fake_server(latency))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dist-")))
        run = RunOptions(concurrency)
        cluster = None
        if engine == "celery":
            cluster = stack.enter_context(_Cluster(tmp, workers=2, threads=concurrency // 2))
            run = RunOptions(concurrency, engine="celery", broker=cluster.redis.url)
        # One segment a paragraph: `count` requests, whole rounds of 16.
        settings = _settings(srv.url, tmp / "cache", concurrency, pack=False)
        stores = Stores()
        # Workers live long: their first requests load TLS, open connections and start Celery's pipes once in a
        # worker's life, not once a run. A round first, unmeasured, on both engines: what is measured is the
        # engine's cost per request, not the cold start of processes made for this measurement.
        texts = tuple(_text(f"{tag}-warm", i) for i in range(concurrency))
        warm = app.plan(Book("Warm", (Chapter(1, "Warm", texts),), language="en"), settings, tmp / "warm", stores)
        _run_pool([warm], stores, concurrency, assemble=False, run=run)
        plan = app.plan(book, settings, tmp / "out", stores)
        cpu0 = cluster.cpu_seconds() if cluster else 0.0
        timer, (report,) = _run_pool([plan], stores, concurrency, assemble=False, run=run)
        workers_cpu = (cluster.cpu_seconds() - cpu0) if cluster else 0.0
    row = _efficiency(report.requests, latency, concurrency, timer, srv)
    row["workers_cpu_ms_per_request"] = round(workers_cpu * 1000 / report.requests, 2)
    return row


def measure_engine_overhead(cfg: Config) -> list[dict[str, Any]]:
    """The same chapter of distinct segments, against the same kind of fake server, through the local engine
    and through the celery engine (2 workers of 8 threads, the driver keeping 16 in flight): each as an
    efficiency against segments x latency / 16, and the second as a ratio of the first. Pairs run back to
    back, alternating, and the median ratio is kept (this machine is shared, single runs swing); at the
    benchmark's latency and at 1 s, nearer what a real speech API takes for a segment."""
    rows = []
    for latency, pairs in ((cfg.latency, 1 if cfg.quick else 3), (1.0, 1)):
        ratios, runs = [], []
        for _ in range(pairs):
            local, celery = _engine_run(cfg, "local", latency), _engine_run(cfg, "celery", latency)
            ratios.append(celery["efficiency"] / local["efficiency"])
            runs.append({"local": local, "celery": celery})
        middle = sorted(range(pairs), key=lambda i: ratios[i])[pairs // 2]
        rows.append({"latency_s": latency, "pairs": pairs, "ratios": [round(r, 3) for r in ratios],
                     "ratio": round(ratios[middle], 3), **runs[middle]})  # fmt: skip
    return rows


def measure_worker_recovery(cfg: Config) -> dict[str, Any]:
    """A worker killed (SIGKILL) mid-batch, with Redis' redelivery left at its default (300 s): two workers of 4
    threads, 8 in flight, requests of 0.5 s; the kill comes once a quarter of the parts are stored. How long
    until the driver sends the dead worker's tasks to the other (it sees its heartbeat lapse), until the batch
    is done, and what the survivor alone needed for what was left."""
    import logging

    latency, count, threads = 0.5, 48 if cfg.quick else 96, 4
    tag = uuid.uuid4().hex[:8]
    book = Book("Bench", (Chapter(1, "Bench", tuple(_text(tag, i) for i in range(count))),), language="en")
    resent: list[float] = []

    class Resent(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if " is gone: " in record.getMessage():
                resent.append(time.perf_counter())

    handler = Resent()
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(fake_server(latency))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-recovery-")))
        cluster = stack.enter_context(_Cluster(tmp, workers=2, threads=threads))
        run = RunOptions(2 * threads, engine="celery", broker=cluster.redis.url)  # redelivery_s: the default
        settings = _settings(srv.url, tmp / "cache", 2 * threads, pack=False)
        stores = Stores()
        plan = app.plan(book, settings, tmp / "out", stores)
        timer, outcome = PhaseTimer(), []
        logging.getLogger("audiobook").addHandler(handler)
        stack.callback(logging.getLogger("audiobook").removeHandler, handler)
        # In a thread, so this one can kill the worker (the run's signal handlers are then not installed).
        driver = threading.Thread(
            target=lambda: outcome.append(app.convert([plan], run, stores=stores, progress=timer, assemble=False))
        )
        driver.start()
        deadline = time.monotonic() + 120
        while timer.answers < count // 4 and driver.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        left = count - timer.answers
        killed = time.perf_counter()
        os.kill(cluster.procs[0].pid, signal.SIGKILL)
        driver.join(timeout=600)
    report = outcome[0].reports[0] if outcome else None
    if driver.is_alive() or report is None or report.synthesized + report.cache_hits < count:
        raise RuntimeError("the batch did not finish after a worker was killed")
    return {
        "requests": count,
        "latency_s": latency,
        "redelivery_s": run.redelivery_s,
        "left_at_kill": left,
        "resent_after_s": round(resent[0] - killed, 2) if resent else None,
        "done_after_s": round((timer.last or killed) - killed, 2),
        "survivor_ideal_s": round(left * latency / threads, 2),
        "sent": srv.stats.get("requests"),
        "asked_twice": (srv.stats["requests"] - report.synthesized) if "requests" in srv.stats else None,
    }


def _offline_library(books: int, chapters: int, paragraphs: int) -> list[Book]:
    out = []
    for b in range(books):
        tag = f"{b}"
        chs = tuple(
            Chapter(c + 1, f"Chapter {c + 1}", tuple(_text(f"{tag}-{c}", p, 400) for p in range(paragraphs)))
            for c in range(chapters)
        )
        out.append(Book(f"Offline {b}", chs, language="en"))
    return out


def measure_offline_batch(cfg: Config) -> list[dict[str, Any]]:
    """An assembly-heavy batch: the offline voice (CPU, no server) and an M4B per book, on the local engine and
    on the celery engine with 1 and with 2 workers of 2 threads. Wall time from submission to the last book
    finished, and the audio made per wall second."""
    books = _offline_library(*((2, 2, 3) if cfg.quick else (4, 2, 6)))
    rows = []
    for engine, workers in (("local", 0), ("celery", 1), ("celery", 2)):
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-offline-")))
            run = RunOptions(2)
            if workers:
                cluster = stack.enter_context(_Cluster(tmp, workers=workers, threads=2))
                run = RunOptions(2 * workers, engine="celery", broker=cluster.redis.url)
            settings = load_settings(env={}, overrides={"backend": "espeak", "cache_dir": tmp / "cache", "m4b": True})
            stores = Stores()
            plans = [app.plan(b, settings, tmp / f"book{i}", stores) for i, b in enumerate(books)]
            t0 = time.perf_counter()
            result = app.convert(plans, run, stores=stores, progress=None)
            wall = time.perf_counter() - t0
            _exit_on_sigterm()
        if any(r.status != BookStatus.DONE for r in result.reports):
            raise RuntimeError(f"offline batch on {engine} not done: {[r.problem() for r in result.reports]}")
        audio_s = sum(r.duration_s or 0.0 for r in result.reports)
        rows.append({
            "engine": engine,
            "workers": workers,
            "books": len(books),
            "requests": sum(r.requests for r in result.reports),
            "audio_s": round(audio_s, 1),
            "wall_s": round(wall, 2),
            "x_realtime": round(audio_s / wall, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------ peak memory

MEMORY_BOOK_CHARS = {False: 850_000, True: 200_000}  # a long novel (full run) / a short one (--quick)
MEMORY_PLAN_BYTES = {False: 50_000_000, True: 10_000_000}  # the text a dry run reads


def _peak_of(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd`` to its end; its peak RSS in MB (the largest of it and the children it waited for, i.e.
    ffmpeg: wait4's ru_maxrss) and its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed: {err.decode(errors='replace')[-500:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def measure_memory(cfg: Config) -> dict[str, Any]:
    """Peak memory of a whole run, as a user starts one (its own process): a long generated novel converted
    against the fake server (every part requested, stored and assembled), twice its length to show the peak
    does not grow with the book, and a dry run of tens of MB of text."""
    from tests.webnovel import webnovel

    chars = MEMORY_BOOK_CHARS[cfg.quick]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, fake_server(cfg.latency) as srv:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": srv.url, "PYTHONPATH": str(REPO)}
        for size in (chars, 2 * chars):
            novel = webnovel(chapters=max(3, size // 2500), characters=size)
            book = Path(tmp) / f"novel-{size}.txt"
            book.write_text(novel.text, encoding="utf-8")
            cmd = [sys.executable, "-m", "pipeline", "-q", "convert", str(book), "-o", f"{tmp}/out-{size}",
                   "--cache-dir", f"{tmp}/cache-{size}", "--concurrency", "16"]  # fmt: skip
            peak, seconds = _peak_of(cmd, env)
            row = {"what": "convert", "characters": len(novel.text), "chapters": len(novel.titles)}
            rows.append({**row, "peak_mb": round(peak, 1), "seconds": round(seconds, 1)})
        # A dry run of a big text: reading and planning hold the book; nothing else grows with it.
        target = MEMORY_PLAN_BYTES[cfg.quick]
        big = Path(tmp) / "big.txt"
        novel = webnovel(chapters=min(9000, max(3, target // 7500)), characters=target // 3)  # 3 bytes a char
        big.write_text(novel.text, encoding="utf-8")
        peak, seconds = _peak_of([sys.executable, "-m", "pipeline", "-q", "plan", str(big), "--json"], env)
        row = {"what": "dry run", "characters": len(novel.text), "bytes": big.stat().st_size}
        rows.append({**row, "chapters": len(novel.titles), "peak_mb": round(peak, 1), "seconds": round(seconds, 1)})
    return {"latency": cfg.latency, "rows": rows}


def _memory_lines(results: dict[str, Any]) -> list[str]:
    m = results["memory"]
    lines = ["", f"8. Peak memory of a run (its own process; RSS, ffmpeg included), fake server at {m['latency']:g} s"]
    for r in m["rows"]:
        size = f"{r['bytes'] / 1e6:.0f} MB of text, " if "bytes" in r else ""
        lines.append(
            f"   {r['what']:<8} {size}{r['characters']:,} characters, {r['chapters']} chapters: "
            f"peak {r['peak_mb']:.0f} MB ({r['seconds']:.0f} s)"
        )
    return lines


# ------------------------------------------------------------------------------------------ output


def _pool_row(r: dict[str, Any]) -> str:
    def num(value: float | None, spec: str) -> str:
        return "?" if value is None else format(value, spec)

    return (
        f"   {r['concurrency']:>5} {r['requests']:>8} {r['ideal_s']:>8.2f} {r['measured_s']:>10.2f} "
        f"{r['efficiency']:>10.3f} {num(r['max_in_flight'], 'd'):>9} {r['client_cpu_ms_per_request']:>17.1f} "
        f"{num(r['server_cpu_ms_per_request'], '.1f'):>17} {r['load_average_1m']:>5.1f}"
    )


# ------------------------------------------------------------------------------------------ verification

VERIFY_LIE_RATE = 0.05  # each of cut_short, silence_middle, run_on: issue 17's Done-when
VERIFY_CONCURRENCY = 16


def _verify_run(
    cfg: Config, book: Book, tmp: Path, name: str, lies: Sequence[str] = (), mode: str = "timing"
) -> dict[str, Any]:
    """One whole run of ``book`` (assembly included) with verification ``mode``, against the fake server in its
    own process, telling ``lies`` (``--lie`` arguments)."""
    extra = [arg for lie in lies for arg in ("--lie", lie)]
    with fake_server(cfg.latency, extra=extra) as srv:
        settings = _settings(srv.url, tmp / f"{name}-cache", VERIFY_CONCURRENCY, verify=mode)
        stores = Stores()
        plan = app.plan(book, settings, tmp / name, stores)
        t0 = time.perf_counter()
        result = app.convert([plan], settings.run, stores=stores, progress=PhaseTimer(), assemble=True)
        wall = time.perf_counter() - t0
    _exit_on_sigterm()
    (report,) = result.reports
    return {"report": report, "wall_s": wall, "plan": plan, "stores": stores}


def measure_verify(cfg: Config) -> dict[str, Any]:
    """Verification's timing check on a whole book at concurrency 16 (Alice when the corpus is there):

    - cost: the CPU of measuring (one decode) and judging every part, taken again part by part from the
      store after a clean run (process + ffmpeg children), against that run's wall time;
    - false alarms: parts the clean run made again;
    - catch rate: a run where the fake server answers 5 % each of cut-short, silence-in-the-middle and run-on
      (first try only), which lies were caught (made again), and its chapters' durations against the clean run's.
    """
    from pipeline import verify
    from tests.fakeserver import LIES, Lie

    book, source = _chunking_book()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as name:
        tmp = Path(name)
        unchecked = _verify_run(cfg, book, tmp, "off", mode="off")
        clean = _verify_run(cfg, book, tmp, "clean")
        report, plan = clean["report"], clean["plan"]
        store = clean["stores"].at(plan.store)
        # The check's own cost, part by part: decode + measure + judge, CPU of this process and its children.
        judge = verify.Judge()
        keys = list(dict.fromkeys(k for c in plan.chapters for k in c.keys))
        texts = {k: s.voice_text for c in plan.chapters for s, k in zip(c.segments, c.keys, strict=True)}
        audio = [(k, store.get(k, "mp3")) for k in keys]
        before = _cpu_now()
        for key, data in audio:
            assert data is not None
            found = verify.measure(data, "mp3", texts[key])
            judge.judge(found, "bench", None)
        check_cpu = _cpu_now() - before
        lies = [f"{kind}:{VERIFY_LIE_RATE}" for kind in LIES]
        lied = _verify_run(cfg, book, tmp, "lied", lies)
        # The transcript check on the same book: what share of the rate budget its requests take.
        heard = _verify_run(cfg, book, tmp, "heard", mode="transcribe")
    told = {kind: [k for k in keys if Lie(kind, VERIFY_LIE_RATE).hits(texts[k])] for kind in LIES}
    lying = {k for ks in told.values() for k in ks}
    v_clean, v_lied = report.verification, lied["report"].verification
    assert v_clean is not None and v_lied is not None
    clean_d = [c.duration_s or 0.0 for c in report.chapters]
    lied_d = [c.duration_s or 0.0 for c in lied["report"].chapters]
    worst = max(abs(a - b) / b for a, b in zip(lied_d, clean_d, strict=True) if b)
    v_heard = heard["report"].verification
    assert v_heard is not None
    speech, hearing = heard["report"].requests, v_heard.transcriptions
    return {
        "source": source,
        "parts": len(keys),
        "concurrency": VERIFY_CONCURRENCY,
        "latency_s": cfg.latency,
        "audio_s": report.duration_s,
        "clean_run_wall_s": round(clean["wall_s"], 2),
        "unverified_run_wall_s": round(unchecked["wall_s"], 2),  # the same run with verify = "off"
        "wall_added": round(clean["wall_s"] / unchecked["wall_s"] - 1, 4),
        "check_cpu_ms_per_part": round(check_cpu * 1000 / len(keys), 2),
        "check_cpu_share_of_wall": round(check_cpu / clean["wall_s"], 4),
        "check_cpu_share_of_audio": round(check_cpu / report.duration_s, 5),
        "false_alarms": v_clean.remade,
        "lies_told": {kind: len(ks) for kind, ks in told.items()},
        "lied_parts": len(lying),
        "remade": v_lied.remade,
        "caught_share": round(min(v_lied.remade, len(lying)) / len(lying), 4) if lying else None,
        "left_suspect": v_lied.suspect,
        "status_after_lies": str(lied["report"].status),
        "worst_chapter_duration_diff": round(worst, 5),
        "transcribe": {
            "speech_requests": speech,
            "transcription_requests": hearing,
            # On one limit shared by both (a relay's), the check's share of it; with limits of their own (OpenAI
            # counts each model apart), transcriptions ÷ speech requests at equal rpm.
            "per_speech_request": round(hearing / speech, 4) if speech else None,
            "share_of_shared_budget": round(hearing / (speech + hearing), 4) if speech + hearing else None,
            "false_alarms": v_heard.remade,
            "cost_usd": v_heard.transcription_cost_usd,
            "speech_cost_usd": heard["report"].estimated_cost_usd,
            "wall_s": round(heard["wall_s"], 2),
            "coverage_min": min((c.coverage_min for c in heard["report"].chapters if c.coverage_min), default=None),
        },
    }


def _cpu_now() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _verify_lines(v: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Verification (timing check): {v['source']}, {v['parts']} parts, concurrency {v['concurrency']}, "
        f"latency {v['latency_s']} s",
        f"  cost: {v['check_cpu_ms_per_part']} ms CPU a part (decode + measure + judge) = "
        f"{v['check_cpu_share_of_wall']:.1%} of the clean run's wall time ({v['clean_run_wall_s']} s), "
        f"{v['check_cpu_share_of_audio']:.2%} of the audio's duration; the run took {v['wall_added']:+.1%} "
        f"wall time against verify = off ({v['unverified_run_wall_s']} s)",
        f"  clean run: {v['false_alarms']} parts made again (false alarms)",
        f"  5 % each lie {v['lies_told']}: {v['remade']} of {v['lied_parts']} lying parts made again "
        f"({v['caught_share']:.1%}), {v['left_suspect']} left suspect; chapters within "
        f"{v['worst_chapter_duration_diff']:.2%} of the clean run's durations",
        *_transcribe_lines(v.get("transcribe")),
    ]


def _transcribe_lines(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return []
    return [
        f"  transcript check (--verify transcribe): {t['transcription_requests']} transcription requests for "
        f"{t['speech_requests']} speech requests ({t['per_speech_request']} a speech request: as much again of "
        f"the rate budget at equal rpm; {t['share_of_shared_budget']:.0%} of one limit shared by both), "
        f"{t['false_alarms']} false alarms, lowest coverage {t['coverage_min']}, ${t['cost_usd']:.4f} beside "
        f"${t['speech_cost_usd']:.2f} of speech, run {t['wall_s']} s",
    ]


def _table(results: dict[str, Any], cfg: Config, json_out: Path) -> str:
    mode = "quick" if cfg.quick else "full"
    lines = [f"Benchmark ({mode}; {os.cpu_count()} CPUs; Python {platform.python_version()})"]
    if "synthesis" in results:
        lines += _synthesis_lines(results, cfg)
    if "batch" in results:
        b = results["batch"]
        lines += ["", f"2. Batch: {b['articles']} articles (1-2 segments each) through one app.convert, one pool"]
        lines.append(_pool_row(b))
    if "rate_limits" in results:
        lines += _rate_lines(results)
    if "chunking" in results:
        lines += _chunking_lines(results)
    if "assembly" in results:
        lines += _assembly_lines(results)
    if "espeak" in results:
        lines += _espeak_lines(results)
    if "distributed" in results:
        lines += _distributed_lines(results["distributed"], cfg)
    if "memory" in results:
        lines += _memory_lines(results)
    if "verify" in results:
        lines += _verify_lines(results["verify"])
    if "articles" in results:
        lines += article_bench.lines(results["articles"])
    lines += ["", f"Total {results['elapsed_s']:.1f} s; figures in {json_out}"]
    return "\n".join(lines)


def _synthesis_lines(results: dict[str, Any], cfg: Config) -> list[str]:
    lines = ["", f"1. Synthesis pool: one chapter, app.convert + OpenAISpeech over HTTP, latency {cfg.latency:g} s"]
    lines.append(
        f"   {'conc.':>5} {'requests':>8} {'ideal s':>8} {'measured s':>10} {'efficiency':>10} {'in flight':>9} "
        f"{'client CPU ms/req':>17} {'server CPU ms/req':>17} {'load':>5}"
    )
    for r in results["synthesis"]:
        lines.append(_pool_row(r))
    bare = results["bare_http"]
    lines.append(
        f"   ceiling now: bare httpx, same requests and server, concurrency {bare['concurrency']}: "
        f"{bare['measured_s']:.2f} s, efficiency {bare['efficiency']:.3f} (load {bare['load_average_1m']:.1f})"
    )
    return lines


def _rate_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "2b. Rate-limited key: a one-chapter book against the fake server's requests-per-minute bucket"]
    lines.append(
        f"   {'scenario (16 in flight)':<48} {'reqs':>5} {'sent':>5} {'429s':>5} {'share':>6} {'late':>5} "
        f"{'ideal s':>8} {'wall s':>7} {'x ideal':>7} {'limit used':>10}  known limit"
    )
    for r in results["rate_limits"]:
        known = f"{r['limit_known']:.0f}/min from {r['limit_source']}" if r["limit_known"] else "-"
        lines.append(
            f"   {r['scenario']:<48} {r['requests']:>5} {r['sent']:>5} {r['rate_limited']:>5} "
            f"{r['rate_limited_share']:>6.1%} {r['late_rate_limited']:>5} {r['ideal_s']:>8.1f} {r['measured_s']:>7.1f} "
            f"{r['x_ideal']:>7.3f} {r['limit_used']:>10.3f}  {known}"
        )
    for r in results["rate_limits"]:
        if r.get("first_contact"):
            lines.append(
                f"   first contact, limit only in the headers ({r['rpm']:.0f}/min, burst {r['burst']:.0f}): "
                f"{r['rate_limited']} of {r['sent']} requests refused ({r['rate_limited_share']:.1%}), "
                f"wall time {r['x_ideal']:.3f} x requests / rate"
            )
    return lines


def _chunking_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "3. Requests per book at max_chars 500, spoken titles included (ideal: Σ⌈chapter characters / 500⌉ "
             "+ titles)"]  # fmt: skip
    lines.append(
        f"   {'book':<34} {'chars':>9} {'ideal':>6} {'packed':>7} {'x ideal':>7} {'floor':>7} {'per para.':>9} "
        f"{'edit re-pays: mean / max / >6':>30}"
    )
    for r in results.get("requests", []):
        lines.append(
            f"   {r['book']:<34} {r['characters']:>9,} {r['ideal']:>6} {r['packed']:>7} "
            f"{r['packed'] / r['ideal']:>7.3f} {r['fewest_whole_sentences'] / r['ideal']:>7.3f} "
            f"{r['per_paragraph'] / r['ideal']:>9.3f} {r['edit_mean']:>14.2f} / {r['edit_max']:>3} / "
            f"{r['edits_over_6']:>5.1%} ({r['edits']} edits)"
        )
    lines.append("   floor: the fewest requests whole sentences allow (one packing region a chapter)")
    c = results["chunking"]
    return lines + [
        "",
        f"3b. Chunking speed: {c['source']}: {c['characters']:,} characters, {c['chapters']} chapters -> "
        f"{c['segments']} segments; best of {c['runs']}: {c['best_s'] * 1000:.1f} ms = "
        f"{c['chars_per_s']:,} characters/s",
    ]


def _assembly_lines(results: dict[str, Any]) -> list[str]:
    a = results["assembly"]
    lines = [
        "",
        "4. Assembly (assemble_chapter, MP3 parts of ~25-30 s: the fake server's tone, or eSpeak speech; in a "
        "subprocess; memory from /proc)",
    ]
    lines.append(
        f"   {'join':<9} {'parts are':<9} {'audio':>8} {'parts':>5} {'wall s':>7} {'x real time':>11} {'CPU s':>6} "
        f"{'python MB':>9} {'(start)':>7} {'one ffmpeg MB':>13} {'tree peak MB':>12} {'load':>5}  levelled"
    )
    for r in a["runs"]:
        levelled = f"{r['lufs']:.1f} LUFS, {r['limited_parts']} parts limited" if r.get("lufs") is not None else "-"
        lines.append(
            f"   {r['mode']:<9} {r.get('parts_are', 'tone'):<9} {r['audio_s'] / 60:>6.1f} m {r['parts']:>5} "
            f"{r['seconds']:>7.2f} {r['x_realtime']:>11.1f} {r.get('cpu_s', 0):>6.1f} {r['python_peak_mb']:>9.1f} "
            f"{r['python_start_mb']:>7.1f} {r['largest_ffmpeg_mb']:>13.1f} {r['peak_mb']:>12.1f} "
            f"{r.get('load_average_1m', 0):>5.1f}  {levelled}"
        )
    growth = ", ".join(
        f"{mode} {g:+.1f} MB" if g is not None else f"{mode} n/a"
        for mode, g in a["peak_growth_mb_per_audio_hour"].items()
    )
    lines.append(f"   tree peak = python + its ffmpeg processes at once; its growth per hour of audio: {growth}")
    e = results.get("end_to_end")
    if e:
        lines.append(
            f"   whole book ({e['source']}, concurrency 16, latency 0.2 s): {e['requests']} requests, "
            f"{e['audio_s'] / 3600:.2f} h of audio; synthesis span {e['synthesis_s']:.1f} s "
            f"(ideal {e['ideal_s']:.1f}), wall {e['wall_s']:.1f} s = {e['x_synthesis']:.2f} x the span"
        )
    return lines


def _espeak_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "5. Offline voice (EspeakSynth, sequential, MP3 encoding included)"]
    for language, e in results["espeak"].items():
        lines.append(
            f"   {language}: {e['segments']} segments, {e['characters']} chars -> {e['audio_s']:.1f} s of audio "
            f"in {e['seconds']:.2f} s = {e['x_realtime']:.1f} x real time"
        )
    return lines


def _distributed_lines(d: dict[str, Any], cfg: Config) -> list[str]:
    lines = ["", "7. Distributed engine (celery on a redis-server of our own, workers as processes)"]
    if "skipped" in d:
        return [*lines, f"   skipped: {d['skipped']}"]
    for o in d["overhead"]:
        lines.append(
            f"   {o['local']['requests']} part requests, latency {o['latency_s']:g} s, 16 in flight: local "
            f"{o['local']['measured_s']:.2f} s (efficiency {o['local']['efficiency']:.3f}), celery 2x8 "
            f"{o['celery']['measured_s']:.2f} s (efficiency {o['celery']['efficiency']:.3f}): "
            f"{o['ratio']:.3f} of local (median of {', '.join(f'{r:.3f}' for r in o['ratios'])}); "
            f"workers' CPU {o['celery']['workers_cpu_ms_per_request']:.1f} ms/request"
        )
    r = d.get("recovery")
    if r:
        resent = "never" if r["resent_after_s"] is None else f"{r['resent_after_s']:.1f} s after the kill"
        lines.append(
            f"   a worker killed mid-batch (SIGKILL, redelivery_s {r['redelivery_s']:g}), {r['requests']} requests of "
            f"{r['latency_s']:g} s: its tasks sent to the other {resent}; batch done {r['done_after_s']:.1f} s after "
            f"the kill (the survivor alone needed {r['survivor_ideal_s']:.1f} s for what was left); "
            f"{r['asked_twice']} requests asked twice"
        )
    lines.append("   offline voice + M4B batch:  engine  workers  books  requests  audio s  wall s  x realtime")
    for r in d["offline"]:
        lines.append(
            f"   {'':26}{r['engine']:>7} {r['workers']:>8} {r['books']:>6} {r['requests']:>9} {r['audio_s']:>8.0f} "
            f"{r['wall_s']:>7.1f} {r['x_realtime']:>11.1f}"
        )
    return lines


def _step(name: str, fn: Callable[..., T], *args: Any) -> T:
    print(f"... {name}", file=sys.stderr, flush=True)
    return fn(*args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter audio (~30 s)")
    parser.add_argument("--latency", type=float, default=0.2, help="fake server latency per request, seconds")
    parser.add_argument("--rounds", type=int, help="rounds of `concurrency` requests per synthesis run (10; quick 5)")
    parser.add_argument("--json-out", type=Path, default=OUT_JSON)
    parser.add_argument(
        "--only", help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}", default=""
    )
    parser.add_argument("--assembly-child", nargs=4, metavar=("PARTS", "COUNT", "OUT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.assembly_child:
        parts, count, out, mode = args.assembly_child
        assembly_child(Path(parts), int(count), Path(out), mode)
        return 0

    cfg = Config.make(args.quick, args.latency)
    if args.rounds:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    os.environ[KEY_ENV] = API_KEY
    # Nothing of the user's cache is read or written (parts, limits learned from headers): a folder of our own.
    scratch = tempfile.TemporaryDirectory(prefix="bench-cache-")  # removed when the benchmark ends
    os.environ["XDG_CACHE_HOME"] = scratch.name
    _exit_on_sigterm()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "python": sys.version}}
    only = {name.strip() for name in args.only.split(",") if name.strip()} or set(SECTIONS)
    if only - set(SECTIONS):
        parser.error(f"unknown section(s) {', '.join(sorted(only - set(SECTIONS)))}; known: {', '.join(SECTIONS)}")
    if "synthesis" in only:
        results["synthesis"] = [
            _step(f"synthesis at concurrency {c}", measure_synthesis, cfg, c) for c in cfg.concurrencies
        ]
        top = max(cfg.concurrencies)
        results["bare_http"] = _step(f"bare httpx at concurrency {top}", measure_bare_http, cfg, top)
    if "batch" in only:
        results["batch"] = _step("batch", measure_batch, cfg)
    if "rate" in only:
        results["rate_limits"] = [
            row for sc in _rate_scenarios(cfg) for row in _step(f"rate limit: {sc.name}", measure_rate_limit, cfg, sc)
        ]
    if "chunking" in only:
        results["requests"] = _step("requests per book", measure_requests, cfg)
        results["chunking"] = _step("chunking", measure_chunking, cfg)
    if "assembly" in only:
        results["assembly"] = _step("assembly", measure_assembly, cfg)
        results["end_to_end"] = _step("a whole book, assembly included", measure_end_to_end, cfg)
    if "voice" in only:
        results["espeak"] = _step("offline voice", measure_espeak, cfg)
    if "distributed" in only:
        missing = _distributed_missing()
        if missing:
            results["distributed"] = {"skipped": missing}
        else:
            results["distributed"] = {
                "overhead": _step("celery engine against local", measure_engine_overhead, cfg),
                "offline": _step("offline voice + M4B batch on 1 and 2 workers", measure_offline_batch, cfg),
                "recovery": _step("a celery worker killed mid-batch", measure_worker_recovery, cfg),
            }
    if "memory" in only:
        results["memory"] = _step("peak memory of a run", measure_memory, cfg)
    if "verify" in only:
        results["verify"] = _step("verification: cost and catch rate", measure_verify, cfg)
    if "articles" in only:
        results["articles"] = _step("articles: extraction on saved pages", article_bench.measure)
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(_table(results, cfg, args.json_out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
