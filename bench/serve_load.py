"""Load on `audiobook serve`: throughput and latency, what N clients at once see, and what idle connections cost.

The server runs in its own process (the offline voice, no key, a free port on 127.0.0.1), so the clients do not
share its interpreter; its thread count is read from ``/proc/<pid>/status``. Uses nothing but
``pipeline.server.make_server``, so the same script measures any version of the server:

    PYTHONPATH=. .venv/bin/python bench/serve_load.py [--requests 120] [--concurrency 8] [--rounds 3]
                                                      [--clients 50 200] [--idle 300]

- **ideal**: the same syntheses with no HTTP at all: the engine in a process of its own, called by as many
  tasks at once as the server has workers (one per core). Speech over HTTP is judged against it (ratio).
- **speech**: ``--concurrency`` clients, each on one kept-alive connection as the SDK does, ``--requests`` in
  all: requests/s, p50 and p99 latency, and the ratio of requests/s to the ideal's. The ideal and the server
  take turns for ``--rounds`` rounds (a shared machine's speed drifts); the median round's figures are shown.
- **models**: the same with ``GET /v1/models``, which does no synthesis: the HTTP layer's own cost.

Both also give the server's CPU time per request (from ``/proc``), which other load on the machine does not
inflate as it does wall time. Under heavy outside load the ratio can exceed 1: the scheduler shares the cores
by runnable threads, and the HTTP run (clients and server) has more of them than the engine alone.
- **burst**: ``--clients`` connect at once, one request each: how many got audio, a 503 with ``Retry-After``, or
  a reset (never acceptable).
- **idle**: ``--idle`` connections open and silent: the server's threads before and during, and how many it still
  holds after a second.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

TEXT = "Hello there."
BODY = json.dumps({"model": "tts-1", "voice": "alloy", "input": TEXT}).encode()
SPEECH = ("POST", "/v1/audio/speech", BODY)
MODELS = ("GET", "/v1/models", None)


def child() -> None:
    from pipeline.server import make_server

    server = make_server("127.0.0.1", 0, None).start()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 2


def engine_child(requests: int, workers: int) -> None:
    """The ideal: ``requests`` syntheses, ``workers`` at once, no HTTP; prints requests per second."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.models import VoiceSpec
    from pipeline.tts.espeak import EspeakSynth

    async def run() -> float:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))
        synth = EspeakSynth()
        spec = VoiceSpec("tts-1", "alloy")
        for _ in range(2 * workers):  # warm as the server is: the voice loaded, the threads started
            await synth.synthesize(TEXT, spec)
        places = asyncio.Semaphore(workers)

        async def one() -> None:
            async with places:
                await synth.synthesize(TEXT, spec)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        took = time.perf_counter() - t0
        await synth.aclose()
        return requests / took

    print(f"{asyncio.run(run()):.2f}")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


def cpu_of(pid: int) -> float:
    """Seconds of CPU the process has used (user and system): unlike wall time, not inflated by other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def steady(port: int, request: tuple[str, str, bytes | None], total: int, concurrency: int) -> dict[str, float]:
    """``total`` requests from ``concurrency`` clients, each on one kept-alive connection; requests/s and the
    p50/p99 latency in ms of those answered 200 (anything else is counted as a failure)."""
    method, path, body = request
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    left = [total]
    start = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        try:
            while True:
                with lock:
                    if not left[0]:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                try:
                    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    outcome = response.status
                except OSError as exc:  # a reset or a timeout: reconnect and go on, counting it
                    conn.close()
                    outcome = type(exc).__name__  # type: ignore[assignment]
                took = time.perf_counter() - t0
                with lock:
                    if outcome == 200:
                        latencies.append(took * 1000)
                    else:
                        failures[str(outcome)] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {
        "rps": len(latencies) / took,
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p99": percentile(latencies, 99) if latencies else float("nan"),
        "failed": sum(failures.values()),
    }


def one_request(port: int, start: threading.Barrier, outcomes: Counter[str], lock: threading.Lock) -> None:
    start.wait()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/audio/speech", body=BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        outcome = str(response.status)
        if response.status == 503 and response.getheader("Retry-After") is None:
            outcome = "503 without Retry-After"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        outcome = "reset"
    except TimeoutError:
        outcome = "timeout"
    except OSError as exc:
        outcome = type(exc).__name__
    finally:
        conn.close()
    with lock:
        outcomes[outcome] += 1


def burst(port: int, clients: int) -> tuple[Counter[str], float]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)
    workers = [threading.Thread(target=one_request, args=(port, start, outcomes, lock)) for _ in range(clients)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes, time.perf_counter() - t0


def idle(pid: int, port: int, count: int, settle: float = 1.0) -> tuple[int, int, int]:
    """Threads before, threads with ``count`` connections open and silent, and how many of them are still open
    (not closed by the server) after ``settle`` seconds."""
    before = threads_of(pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    time.sleep(settle)  # let the server accept them all
    during = threads_of(pid)
    open_ = 0
    for s in socks:
        s.setblocking(False)
        try:
            open_ += s.recv(1) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
        s.close()
    return before, during, open_


def shown(figures: dict[str, float]) -> str:
    failed = f", {figures['failed']:.0f} failed" if figures["failed"] else ""
    cpu = f", server CPU {figures['cpu_ms']:.2f} ms a request" if "cpu_ms" in figures else ""
    return f"{figures['rps']:.1f} requests/s, p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms{cpu}{failed}"


def measured(pid: int, port: int, request: tuple[str, str, bytes | None], total: int, clients: int) -> dict[str, float]:
    """``steady``, with the server's CPU time per request."""
    cpu = cpu_of(pid)
    figures = steady(port, request, total, clients)
    figures["cpu_ms"] = (cpu_of(pid) - cpu) * 1000 / total
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120, help="speech requests in the steady run (0: skip)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the steady runs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the ideal and speech, taking turns")
    parser.add_argument("--clients", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    if args.engine:
        engine_child(*args.engine)
        return
    here = [sys.executable, __file__]

    def ideal() -> float:
        engine = [*here, "--engine", str(args.requests), str(cores())]
        return float(subprocess.run(engine, capture_output=True, text=True, check=True).stdout)

    proc = subprocess.Popen([*here, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        if args.requests:
            # The machine is shared, so its speed drifts: the ideal and the server take turns, and each round's
            # ratio compares two runs a few seconds apart; the median round is reported.
            steady(port, SPEECH, 2 * args.concurrency, args.concurrency)  # warm: connections, the engine's voice
            rounds = [
                (ideal(), measured(proc.pid, port, SPEECH, args.requests, args.concurrency)) for _ in range(args.rounds)
            ]
            rounds.sort(key=lambda r: r[1]["rps"] / r[0])
            best, speech = rounds[len(rounds) // 2]
            print(f"ideal (the engine alone, {cores()} at once, no HTTP), that round: {best:.1f} requests/s")
            ratios = ", ".join(f"{figures['rps'] / engine:.2f}" for engine, figures in rounds)
            print(
                f"speech, {args.concurrency} kept-alive clients: {shown(speech)}; {speech['rps'] / best:.2f} of "
                f"the ideal (the median of {args.rounds} rounds: {ratios})"
            )
            models = measured(proc.pid, port, MODELS, args.requests * 10, args.concurrency)
            print(f"models, {args.concurrency} kept-alive clients: {shown(models)}")
        for n in args.clients:
            outcomes, took = burst(port, n)
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
            print(f"{n:>4} concurrent clients: {counts} ({took:.1f} s); server threads after: {threads_of(proc.pid)}")
        if args.idle:
            before, during, still_open = idle(proc.pid, port, args.idle)
            print(
                f"{args.idle:>4} idle connections: server threads {before} -> {during}; "
                f"{still_open} still open after 1 s"
            )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
