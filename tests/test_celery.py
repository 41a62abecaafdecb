"""The celery engine for real: a redis-server of the test's own, ``audiobook worker`` processes, the driver as a
user runs it (``audiobook batch jobs.toml --engine celery --broker ...``), against the fake speech server."""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeSpeechServer
from tests.helpers import FAKE_KEY as KEY
from tests.helpers import child_env, run_cli, write_book
from tests.redisserver import RedisServer

pytest.importorskip("celery", reason="the celery engine needs the 'distributed' extra: pip install -e '.[distributed]'")
redis = pytest.importorskip("redis", reason="the celery engine needs the 'distributed' extra")

READY_TIMEOUT_S = 60


class Workers:
    """``audiobook worker`` processes on one broker, each with its own log and cache folder (as on machines of
    their own), and the key and server in their environment."""

    def __init__(self, root: Path, broker: str, server_url: str, extra: dict[str, str] | None = None):
        self.root, self.broker, self.server_url, self.extra = root, broker, server_url, extra or {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 2, *, key: bool = True) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        log = self.root / f"worker{n}.log"
        env = {"OPENAI_BASE_URL": self.server_url, **self.extra, **({"OPENAI_API_KEY": KEY} if key else {})}
        env["XDG_CACHE_HOME"] = str(self.root / f"worker{n}-cache")
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "worker",
                    "--verbose",  # Celery's line per task: which worker took what
                    "--broker",
                    self.broker,
                    "--concurrency",
                    str(concurrency),
                ],
                env=child_env(env),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b" ready: " not in log.read_bytes():
            assert proc.poll() is None, f"worker exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, f"worker not ready: {log.read_text(errors='replace')[-2000:]}"
            time.sleep(0.05)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path, redis_server: RedisServer, server: FakeSpeechServer) -> Iterator[Workers]:
    w = Workers(tmp_path, redis_server.url, server.url, {"AUDIOBOOK_REDELIVERY_S": "5"})
    try:
        yield w
    finally:
        w.stop()


def library(root: Path, count: int, **kw: int) -> None:
    (root / "books").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_book(root / "books" / f"book{i}.txt", seed=i + 1, **kw)


def job_file(root: Path, output: str, settings: str = "") -> Path:
    path = root / f"{output}.toml"
    path.write_text(f'output = "{output}"\n{settings}[[book]]\npath = "books/*"\n', encoding="utf-8")
    return path


def driver_env(root: Path, name: str, server_url: str, redelivery_s: str = "5") -> dict[str, str]:
    """The driver's environment names the endpoint (the job decides where its speech comes from) but holds no
    key: the workers speak to the server with keys of their own."""
    return {"XDG_CACHE_HOME": str(root / f"{name}-cache"), "AUDIOBOOK_REDELIVERY_S": redelivery_s,
            "OPENAI_BASE_URL": server_url}  # fmt: skip


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def comparable(value: Any) -> Any:
    """A report or summary without what differs between any two runs: times, and the run's own folders."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if not any(
                w in k for w in ("time", "elapsed", "started", "finished", "seconds_", "_s", "waited", "per_minute")
            )
            and k not in ("output", "out_dir", "cache", "store", "job", "summary")
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def redis_holds(url: str, needle: str) -> list[str]:
    """Every key of the server whose name or value holds ``needle``, plain or inside a base64 message body."""
    client = redis.Redis.from_url(url)
    found = []
    probe = needle.encode()
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        blobs = [key, *values]
        for blob in list(blobs):  # kombu keeps a message's body base64-encoded inside its JSON envelope
            try:
                body = json.loads(blob).get("body")
                blobs.append(base64.b64decode(body))
            except (ValueError, AttributeError, TypeError):
                pass
        if any(probe in b for b in blobs):
            found.append(key.decode(errors="replace"))
    return found


def test_a_batch_on_two_workers_matches_the_local_engine_and_leaves_no_key_in_redis(
    tmp_path: Path, workers: Workers, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    library(tmp_path, count=3, chapters=2, paragraphs=4, sentences=4)
    local = run_cli(
        "batch", str(job_file(tmp_path, "local")), cwd=tmp_path,
        env={"OPENAI_API_KEY": KEY, **driver_env(tmp_path, "local", server.url)},
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    local_requests = collections.Counter(r.input for r in server.requests)
    server.clear()

    workers.start()
    workers.start()
    jobs = job_file(tmp_path, "celery")
    proc = run_cli(
        "batch", str(jobs), "--engine", "celery", "--broker", redis_server.url,
        env=driver_env(tmp_path, "celery", server.url), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in tmp_path.glob("worker*.log"))

    # Every part was made once, by one worker or the other, and the same parts as the local engine made.
    made = collections.Counter(r.input for r in server.requests)
    assert made == local_requests and set(made.values()) == {1}
    logs = [p.read_text() for p in sorted(tmp_path.glob("worker*.log"))]
    assert all("audiobook.part" in log for log in logs), "both workers took part requests"

    ours, theirs = files(tmp_path / "local"), files(tmp_path / "celery")
    assert sorted(ours) == sorted(theirs) and len([n for n in ours if n.endswith(".mp3")]) == 6
    for name, data in ours.items():
        if name.endswith((".mp3", ".m3u", ".m3u8", ".cue", ".srt", ".vtt")):
            assert theirs[name] == data, f"{name} differs"
        elif name.endswith(".json"):
            assert comparable(json.loads(theirs[name])) == comparable(json.loads(data)), f"{name} differs"
    # The same summary on the terminal, but for the folder it names.
    assert proc.stdout.replace("/celery/", "/local/") == local.stdout

    assert redis_holds(redis_server.url, KEY) == []
    assert any(k.startswith("celery-task-meta") or k.startswith("audiobook:") for k in _keys(redis_server.url))


def _keys(url: str) -> list[str]:
    return [k.decode() for k in redis.Redis.from_url(url).scan_iter()]


@contextlib.contextmanager
def driving(root: Path, redis_url: str, server_url: str, job: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``audiobook batch JOB --engine celery`` in a child process, its output in driver.out and driver.err (read
    them while it runs); killed if the test leaves it running."""
    with (root / "driver.out").open("w") as out, (root / "driver.err").open("w") as err:
        driver = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "batch", str(job), "--engine", "celery", "--broker", redis_url],
            env=child_env({**driver_env(root, "driver", server_url), **env}), cwd=root, stdout=out, stderr=err,
            text=True,
        )  # fmt: skip
        try:
            yield driver
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()


def wait_for(what: Callable[[], bool], message: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message()
        time.sleep(0.02)


def test_kill_9_of_a_worker_mid_batch_sends_its_work_again_at_once_asking_again_only_what_died_in_flight(
    tmp_path: Path, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    # Redis itself would give the dead worker's tasks to another after redelivery_s, 300 s by default: the
    # driver sees the worker go (its heartbeat lapses) and sends them again at once.
    server.latency = 0.4  # requests long enough in flight that the kill lands during some
    library(tmp_path, count=2, chapters=2, paragraphs=6, sentences=3)
    workers = Workers(tmp_path, redis_server.url, server.url)
    concurrency = 2  # the victim's: this many requests at once, in twice as many task threads
    try:
        victim = workers.start(concurrency=concurrency)
        workers.start(concurrency=2)
        job = job_file(tmp_path, "out", "[defaults]\npack = false\n")
        with driving(tmp_path, redis_server.url, server.url, job, AUDIOBOOK_REDELIVERY_S="300") as driver:
            wait_for(lambda: len(server.served_inputs()) >= 6 and server.in_flight > 0 and driver.poll() is None,
                     lambda: "the batch did not get going")  # fmt: skip
            killing_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            driver.wait(timeout=120)  # not the 300 s of a redelivery
    finally:
        workers.stop()
    out, err = (tmp_path / "driver.out").read_text(), (tmp_path / "driver.err").read_text()
    assert driver.returncode == 0, err + "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
    assert f"worker {socket.gethostname()}:{victim.pid} is gone" in err
    assert "2 books done" in out + err or all(
        b["status"] == "done" for b in json.loads((tmp_path / "out" / "batch-summary.json").read_text())["books"]
    )

    requests = server.requests
    # The kill may land between a request's headers and its body (httpx writes them apart): the server records
    # that request without its text, and answers 400 to the body that never came. It was the victim's, at the
    # server at the kill; its text is asked again like any other of the victim's.
    cut = [r for r in requests if r.input is None]
    assert all(r.path == "/v1/audio/speech" and r.status == 400 for r in cut)
    by_input = collections.defaultdict(list)
    for r in requests:
        if r.input is not None:
            by_input[r.input].append(r)
    twice = {text: rs for text, rs in by_input.items() if len(rs) > 1}
    # Asked again only what died with the victim: a task in its hands whose part it had not stored yet, either
    # still at the server or answered but not yet written (under load an answer from well before the kill may
    # die so). It holds one task per thread (prefetch 1), 2 * concurrency: at most so many texts are asked twice,
    # each exactly twice, the second time after the kill (a copy sent once the victim's heartbeat lapsed). That
    # the first time was before the kill the server's clock cannot tell: it notes a request when its handler
    # thread reads it, which under load may be after the kill of the worker that wrote it.
    assert len(twice) <= 2 * concurrency
    for rs in twice.values():
        assert len(rs) == 2 and rs[1].time > killing_at
    # Of those, the requests surely still at the server at the kill (it answers each one its latency after
    # noting it) and those cut short held the victim's request places at that moment: at most its concurrency.
    at_server = [text for text, rs in twice.items() if rs[0].time + server.latency > killed_at]
    assert len(at_server) + len(cut) <= concurrency
    # Every part of both books was made: 24 paragraphs and 4 chapter titles.
    assert len(by_input) == 2 * 2 * 6 + 4
    assert b"audiobook.part" in (tmp_path / "worker0.log").read_bytes(), "the killed worker had taken work"
    assert not list((tmp_path / "out").rglob("*.part"))
    assert len(list((tmp_path / "out").rglob("*.mp3"))) == 4


def test_two_workers_share_one_rate_budget(tmp_path: Path, redis_server: RedisServer, isolated_env: Path) -> None:
    # 60 a minute at the server (bursts of 5), and 60 a minute configured: each worker alone would keep to it;
    # two that did not share would send twice that, and be refused.
    with FakeSpeechServer(api_key=KEY, latency=0.05, rpm=60) as srv:
        w = Workers(tmp_path, redis_server.url, srv.url)
        try:
            w.start(concurrency=3)
            w.start(concurrency=3)
            library(tmp_path, count=1, chapters=2, paragraphs=5, sentences=1)
            proc = run_cli(
                "batch", str(job_file(tmp_path, "out", "[defaults]\nrpm = 60\npack = false\n")),
                "--engine", "celery", "--broker", redis_server.url,
                env=driver_env(tmp_path, "driver", srv.url), cwd=tmp_path,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        finally:
            w.stop()
        stats = srv.stats()
        arrivals = sorted(r.time for r in srv.requests)
    assert len(arrivals) == 2 * 5 + 2  # paragraphs and chapter titles
    assert stats.rate_limited == 0
    # Never more than the bucket holds plus what refills: burst 5, then one a second.
    for i, start in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            assert j - i + 1 <= 5 + (arrivals[j] - start) * 1.0 + 0.5
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 5) * 0.9  # paced, not merely lucky
    assert redis_holds(redis_server.url, KEY) == []
    # The driver has no governor: the limit in its report is what the workers' results said.
    (report,) = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("report.json")]
    assert report["rate"]["limit_rpm"] == 60 and report["rate"]["limit_source"] in ("config", "headers")


def queued_tasks(url: str) -> list[str]:
    """The names of the tasks waiting in the queue, or held unacknowledged for a worker."""
    client = redis.Redis.from_url(url)
    messages = client.lrange("celery", 0, -1) + [json.dumps(json.loads(raw)[0]).encode() for raw in
                                                 client.hvals("unacked")]  # fmt: skip
    return [json.loads(m)["headers"]["task"] for m in messages]


def test_a_driver_without_workers_says_so_and_a_sigint_ends_it_taking_back_what_it_queued(
    tmp_path: Path, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    library(tmp_path, count=2, chapters=2, paragraphs=3, sentences=2)
    job = job_file(tmp_path, "out", "[defaults]\npack = false\n")
    with driving(tmp_path, redis_server.url, server.url, job, AUDIOBOOK_WORKER_PATIENCE_S="1") as driver:
        err = tmp_path / "driver.err"
        wait_for(lambda: "no worker has taken" in err.read_text(), lambda: f"no warning: {err.read_text()}")
        assert queued_tasks(redis_server.url), "the run's tasks wait in the queue"
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=30)  # at once: nothing is in flight
    assert driver.returncode == 130, err.read_text()
    (line,) = [line for line in err.read_text().splitlines() if "no worker has taken" in line]
    assert "none is alive" in line and "audiobook worker --broker" in line
    assert "Traceback" not in err.read_text()
    # Nothing of the run that is gone is left for a worker started later: not queued, not held for redelivery.
    assert queued_tasks(redis_server.url) == []


def test_redis_restarting_mid_batch_is_one_line_and_the_batch_goes_on(
    tmp_path: Path, workers: Workers, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    server.latency = 0.2
    library(tmp_path, count=2, chapters=2, paragraphs=5, sentences=2)
    workers.start()
    workers.start()
    job = job_file(tmp_path, "out", "[defaults]\npack = false\n")
    with driving(tmp_path, redis_server.url, server.url, job) as driver:
        err = tmp_path / "driver.err"
        wait_for(lambda: len(server.served_inputs()) >= 4, lambda: f"the batch did not get going: {err.read_text()}")
        redis_server.stop()
        wait_for(lambda: "does not answer" in err.read_text(), lambda: f"no word of it: {err.read_text()}")
        redis_server.start()  # on the same port, empty: the queue and the results are gone
        driver.wait(timeout=120)
    text = err.read_text()
    assert driver.returncode == 0, text + "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
    assert "Traceback" not in text
    assert len([line for line in text.splitlines() if "does not answer" in line]) == 1
    assert len(list((tmp_path / "out").rglob("*.mp3"))) == 4


def test_workers_without_the_key_leave_the_work_to_one_that_has_it_and_fail_it_naming_them_only_if_none_has(
    tmp_path: Path, workers: Workers, redis_server: RedisServer, server: FakeSpeechServer
) -> None:
    library(tmp_path, count=4, chapters=1, paragraphs=3, sentences=2)
    keyless = [workers.start(concurrency=2, key=False), workers.start(concurrency=2, key=False)]
    job = job_file(tmp_path, "out", "[defaults]\npack = false\n")
    with driving(tmp_path, redis_server.url, server.url, job) as driver:
        driver.wait(timeout=120)
    err = (tmp_path / "driver.err").read_text()
    assert driver.returncode == 1, err
    assert "no worker can serve" in err and "Traceback" not in err
    for proc in keyless:
        assert f"worker {socket.gethostname()}:{proc.pid}:" in err
    # Each found out once, with at most a request per request place, said so, and sent none after.
    assert len([r for r in server.requests if r.status == 401]) <= 2 * 2
    for n, proc in enumerate(keyless):
        assert f"worker {socket.gethostname()}:{proc.pid} cannot serve" in (tmp_path / f"worker{n}.log").read_text()
    # What the workers held when the run ended they put down, and nothing goes back to the queue.
    wait_for(lambda: queued_tasks(redis_server.url) == [], lambda: f"left behind: {queued_tasks(redis_server.url)}")

    # One worker with the key: the same batch is done, the keyless ones leaving it every part.
    server.clear()
    workers.start(concurrency=2)
    with driving(tmp_path, redis_server.url, server.url, job) as driver:
        driver.wait(timeout=120)
    err = (tmp_path / "driver.err").read_text()
    assert driver.returncode == 0, err + "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
    summary = json.loads((tmp_path / "out" / "batch-summary.json").read_text())
    assert [b["status"] for b in summary["books"]] == ["done"] * 4
    assert {r.status for r in server.requests} == {200}


def test_a_worker_makes_a_suspect_part_afresh_rather_than_answer_it_from_its_cache(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Verification's fresh request travels in the task (``PartRequest.remake``): the worker sends it to the
    voice even though the part is in the store, and keeps the better answer."""
    library(tmp_path, count=1, chapters=1, paragraphs=2, sentences=3)
    with FakeSpeechServer(api_key=KEY, ms_per_char=60.0) as human:  # a human speech rate
        human.lie("cut_short", 1.0)  # every text's first answer stops halfway
        workers = Workers(tmp_path, redis_server.url, human.url)
        try:
            workers.start()
            proc = run_cli(
                "batch", str(job_file(tmp_path, "out")), "--engine", "celery",
                "--broker", redis_server.url, cwd=tmp_path,
                env={**driver_env(tmp_path, "driver", human.url), "AUDIOBOOK_VERIFY": "timing",
                     "AUDIOBOOK_ANNOUNCE_TITLES": "false"},
            )  # fmt: skip
        finally:
            workers.stop()
        assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
        asked = collections.Counter(r.input for r in human.requests)
        assert set(asked.values()) == {2}  # each: the lie, then afresh
        assert human.lies_told()["cut_short"] == len(asked)
    (report_path,) = (tmp_path / "out").rglob("report.json")
    report = json.loads(report_path.read_text())
    assert report["status"] == "done"
    assert report["verification"]["remade"] == len(asked) and report["verification"]["suspect"] == 0
    summary = json.loads((tmp_path / "out" / "batch-summary.json").read_text())
    assert summary["totals"]["remade"] == len(asked) and summary["totals"]["unverified"] == 0
