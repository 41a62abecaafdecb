"""Load on `audiobook serve`: what N clients at once see, and what idle connections cost the server.

The server runs in its own process (the offline voice, no key, a free port on 127.0.0.1), so the clients do not
share its interpreter; its thread count is read from ``/proc/<pid>/status``. Uses nothing but
``pipeline.server.make_server``, so the same script measures any version of the server:

    PYTHONPATH=. .venv/bin/python bench/serve_load.py [--clients 50 200] [--idle 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

BODY = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hello there."}).encode()


def child() -> None:
    from pipeline.server import make_server

    server = make_server("127.0.0.1", 0, None).start()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        for n in args.clients:
            outcomes, took = burst(port, n)
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
            print(f"{n:>4} concurrent clients: {shown} ({took:.1f} s); server threads after: {threads_of(proc.pid)}")
        if args.idle:
            before, during, still_open = idle(proc.pid, port, args.idle)
            shown = f"server threads {before} -> {during}; {still_open} still open after 1 s"
            print(f"{args.idle:>4} idle connections: {shown}")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
