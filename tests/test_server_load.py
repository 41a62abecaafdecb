"""The speech server under load and against slow, silent or greedy clients, over real sockets on 127.0.0.1.

Timeouts are injected short (``ServerLimits``) so that nothing waits long; waiting for the server to reach a
state polls it with a deadline, it never sleeps a fixed time."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import openai
import pytest

from pipeline.models import SpeechResult, VoiceSpec
from pipeline.server import MAX_BODY_BYTES, ServerLimits, SpeechServer, make_server
from pipeline.tts.espeak import EspeakSynth
from tests.audiocheck import is_mp3

SPEECH = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hello there."}).encode()


class GateSynth:
    """A fake engine that holds every synthesis until ``gate`` opens, in a worker thread as real engines do."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def identity(self) -> str:
        return "gate"

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        self.started.release()
        await asyncio.to_thread(self.gate.wait, 10)
        return SpeechResult(b"ID3 gated " + text.encode())

    async def aclose(self) -> None:
        self.gate.set()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.005)


def post(server: SpeechServer, body: bytes = SPEECH, timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 5 s pass: then the test fails)."""
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def gated() -> Iterator[tuple[SpeechServer, GateSynth]]:
    synth = GateSynth()
    server = make_server("127.0.0.1", 0, None, synth, limits=ServerLimits(workers=1, queue=1)).start()
    yield server, synth
    synth.gate.set()
    server.shutdown()


def test_200_concurrent_clients_get_audio_or_503_never_a_reset_or_a_hang() -> None:
    limits = ServerLimits()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(200)

    def client() -> None:
        start.wait()
        try:
            status, headers, body = post(server)
        except Exception as exc:  # a reset, a refused connection, a timeout: each one a failure to report
            outcome = type(exc).__name__
        else:
            if status == 200 and is_mp3(body):
                outcome = "audio"
            elif (
                status == 503
                and int(headers["Retry-After"]) >= 1
                and json.loads(body)["error"]["type"] == "server_error"
            ):
                outcome = "503 with Retry-After"
            else:
                outcome = f"{status} {body[:60]!r}"
        with lock:
            outcomes[outcome] += 1

    with make_server("127.0.0.1", 0, None, EspeakSynth(), limits=limits).start() as server:
        threads_before = threading.active_count()
        t0 = time.monotonic()
        clients = [threading.Thread(target=client) for _ in range(200)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=30)
        took = time.monotonic() - t0
        wait_until(lambda: server.connections == 0)
        # The clients' threads are gone; the server's are what it had plus its synthesis workers, started lazily.
        assert threading.active_count() <= threads_before + limits.workers

    assert set(outcomes) <= {"audio", "503 with Retry-After"}, outcomes
    assert sum(outcomes.values()) == 200
    # Requests are refused only once every worker and queue place is taken, so at least that many are served.
    assert outcomes["audio"] >= limits.workers + limits.queue
    assert took < 20


def test_a_full_queue_is_503_at_once_while_other_requests_are_still_read(gated: tuple[SpeechServer, GateSynth]) -> None:
    server, synth = gated
    answers: list[tuple[int, dict[str, str], bytes]] = []
    first = threading.Thread(target=lambda: answers.append(post(server)))
    first.start()
    assert synth.started.acquire(timeout=5)  # the one worker is busy
    second = threading.Thread(target=lambda: answers.append(post(server)))
    second.start()
    wait_until(lambda: server.pending == 2)  # and the one queue place is taken

    t0 = time.monotonic()
    status, headers, body = post(server)
    assert status == 503
    assert headers["Retry-After"].isdigit() and 1 <= int(headers["Retry-After"]) <= 60
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert "overloaded" in error["message"]
    sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"]
    assert [m.id for m in sdk.models.list()]  # synthesis is stuck; reading and answering are not
    assert time.monotonic() - t0 < 2

    synth.gate.set()
    first.join(timeout=5)
    second.join(timeout=5)
    assert sorted(a[0] for a in answers) == [200, 200]
    assert server.pending == 0


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Le",  # headers that stop coming
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + SPEECH[:10],  # a short body
    ],
    ids=["headers", "body"],
)
def test_a_stalled_request_is_answered_408_and_dropped_after_its_read_timeout(sent: bytes) -> None:
    limits = ServerLimits(header_timeout=0.3, body_timeout=0.3)
    with make_server("127.0.0.1", 0, None, GateSynth(), limits=limits).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            t0 = time.monotonic()
            sock.sendall(sent)
            answer = read_all(sock)  # ends because the server closes the connection
            waited = time.monotonic() - t0
        assert status_of(answer) == 408
        assert b"Connection: close" in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"].endswith("not received in time.")
        assert 0.3 <= waited < 3
        wait_until(lambda: server.connections == 0)


def test_idle_connections_hold_no_threads() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth()).start() as server:
        threads = threading.active_count()
        silent = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(300)]
        try:
            wait_until(lambda: server.connections == 300)  # all accepted, none answered yet
            assert threading.active_count() == threads
            for sock in silent:  # each makes one request and keeps its connection open, as SDK clients do
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in silent:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            assert server.connections == 300
            assert threading.active_count() == threads
        finally:
            for sock in silent:
                sock.close()
        wait_until(lambda: server.connections == 0)


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    limits = ServerLimits(idle_timeout=0.3)
    with make_server("127.0.0.1", 0, None, GateSynth(), limits=limits).start() as server:
        silent = socket.create_connection((server.host, server.port), timeout=5)
        used = socket.create_connection((server.host, server.port), timeout=5)
        with silent, used:
            used.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            answer = read_all(used)
            assert status_of(answer) == 200 and b"Connection: close" not in answer  # kept alive, then closed
            assert read_all(silent) == b""  # closed without an answer: it asked nothing
            assert 0.3 <= time.monotonic() - t0 < 3
        wait_until(lambda: server.connections == 0)


def test_connections_beyond_the_limit_wait_in_the_backlog_instead_of_being_reset() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth(), limits=ServerLimits(connections=2)).start() as server:
        first, second = (socket.create_connection((server.host, server.port), timeout=5) for _ in range(2))
        wait_until(lambda: server.connections == 2)
        third = socket.create_connection((server.host, server.port), timeout=5)  # the kernel holds it
        third.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        third.settimeout(0.2)
        with pytest.raises(TimeoutError):
            third.recv(1)
        assert server.connections == 2
        first.close()  # a place frees up: the waiting client is accepted and answered
        assert status_of(read_all(third)) == 200
        for sock in (second, third):
            sock.close()


def test_a_refused_oversized_body_is_answered_not_reset() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth()).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            size = MAX_BODY_BYTES * 16  # more than the kernel buffers on both sides hold
            sock.sendall(f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
            sock.sendall(b"x" * size)  # the server never wanted it, but reads it away so this is not reset
            answer = read_all(sock)
        assert status_of(answer) == 413
        assert b"Request body too large" in answer
