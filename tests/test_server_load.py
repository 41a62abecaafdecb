"""The speech server under load and against slow, silent or greedy clients, over real sockets on 127.0.0.1.

Timeouts are injected short (``ServerLimits``) so that nothing waits long; waiting for the server to reach a
state polls it with a deadline, it never sleeps a fixed time."""

from __future__ import annotations

import asyncio
import contextlib
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
from pipeline.server import MAX_BODY_BYTES, MAX_HEAD_BYTES, ServerLimits, SpeechServer, make_server
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
    """One request on a connection of its own: status, headers (names lower-case) and body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/audio/speech", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
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


def read_response(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """One answer on a connection that stays open: status, head (lower-case) and body, by its Content-Length."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the body"
        body += chunk
    return status_of(head), head, body


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
                and int(headers["retry-after"]) >= 1
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
    assert headers["retry-after"].isdigit() and 1 <= int(headers["retry-after"]) <= 60
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
        assert b"connection: close" in answer.lower()
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
            assert status_of(answer) == 200 and b"connection: close" not in answer.lower()  # kept alive, then closed
            assert read_all(silent) == b""  # closed without an answer: it asked nothing
            assert 0.3 <= time.monotonic() - t0 < 3
        wait_until(lambda: server.connections == 0)


def test_a_request_beyond_the_connection_bound_is_503_with_retry_after_and_served_once_one_closes() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth(), limits=ServerLimits(connections=2)).start() as server:
        first, second = (socket.create_connection((server.host, server.port), timeout=5) for _ in range(2))
        wait_until(lambda: server.connections == 2)
        third = socket.create_connection((server.host, server.port), timeout=5)
        third.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(third)  # answered, then closed: it frees its place
        assert status_of(answer) == 503
        head, _, body = answer.lower().partition(b"\r\n\r\n")
        assert b"retry-after: 1\r\n" in head + b"\r\n" and b"connection: close" in head
        assert json.loads(body)["error"]["type"] == "server_error"
        first.close()  # a place frees up: the next client is answered
        wait_until(lambda: server.connections == 1)
        with socket.create_connection((server.host, server.port), timeout=5) as fourth:
            fourth.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(fourth)[0] == 200
        for sock in (second, third):
            sock.close()


def test_a_refused_oversized_body_is_answered_read_away_and_the_connection_kept() -> None:
    synth = GateSynth()
    synth.gate.set()
    with (
        make_server("127.0.0.1", 0, None, synth).start() as server,
        socket.create_connection((server.host, server.port), timeout=5) as sock,
    ):
        size = MAX_BODY_BYTES * 16  # more than the kernel buffers on both sides hold
        sock.sendall(f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        sock.sendall(b"x" * size)  # the server never wanted it, but reads it away so this is not reset
        status, _, body = read_response(sock)
        assert status == 413
        assert json.loads(body)["error"]["message"] == f"Request body too large: at most {MAX_BODY_BYTES} bytes."
        head = f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: {len(SPEECH)}\r\n\r\n"
        sock.sendall(head.encode() + SPEECH)  # the same connection carries the next request
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"ID3 gated Hello there.")


def test_an_oversized_body_announced_with_expect_100_continue_is_refused_before_it_is_sent() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth()).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(
                f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n"
                "Expect: 100-continue\r\n\r\n".encode()
            )
            answer = read_all(sock)  # the body was never sent: answered at once, then closed
        assert status_of(answer) == 413
        assert b"100 continue" not in answer.lower() and b"connection: close" in answer.lower()


def test_a_chunked_body_is_read_and_one_over_the_cap_refused() -> None:
    synth = GateSynth()
    synth.gate.set()
    with make_server("127.0.0.1", 0, None, synth).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (SPEECH[:7], SPEECH[7:])) + b"0\r\n\r\n"
            sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
            assert read_response(sock)[::2] == (200, b"ID3 gated Hello there.")
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"x" * 65536
            with contextlib.suppress(OSError):  # refused once over the cap and closed: the rest may not go out
                for _ in range(MAX_BODY_BYTES // len(piece) + 2):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            status, head, body = read_response(sock)
        assert status == 413 and b"connection: close" in head
        assert "too large" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # which one ends the body? never guess
        b"Content-Length: 5\r\nContent-Length: 45\r\n",
        b"Content-Length: -5\r\n",
        b"Transfer-Encoding: gzip, chunked, identity\r\n",
    ],
    ids=["length-and-chunked", "two-lengths", "negative-length", "chunked-not-last"],
)
def test_ambiguous_framing_is_refused_and_nothing_hidden_in_it_is_served(framing: bytes) -> None:
    """The request-smuggling shapes: a second request hidden where one reading of the framing puts the body
    must never reach the app."""
    synth = GateSynth()
    synth.gate.set()
    hidden = b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(SPEECH), SPEECH)
    with make_server("127.0.0.1", 0, None, synth).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/models HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n" + hidden)
            answer = read_all(sock)
        assert status_of(answer) == 400
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["type"] == "invalid_request_error" and "malformed or ambiguous" in error["message"]
        assert answer.count(b"HTTP/1.1 ") == 1 and b"gated" not in answer
        assert synth.started.acquire(timeout=0) is False  # no synthesis was ever asked for


def test_a_malformed_request_line_is_400_in_the_api_shape() -> None:
    with (
        make_server("127.0.0.1", 0, None, GateSynth()).start() as server,
        socket.create_connection((server.host, server.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /v1/models HTTP/1.1 extra\r\nHost: x\r\n\r\n")
        answer = read_all(sock)
    assert status_of(answer) == 400
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["param"] is None


def test_headers_over_the_cap_are_431() -> None:
    with make_server("127.0.0.1", 0, None, GateSynth()).start() as server:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(OSError):  # refused and closed while headers still go out
                for n in range(2 * MAX_HEAD_BYTES // 1000):
                    sock.sendall(b"X-Filler-%d: %s\r\n" % (n, b"y" * 1000))
            answer = read_all(sock)
        assert status_of(answer) == 431
        assert "too large" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["message"]


def test_a_stalled_client_does_not_hold_up_the_others() -> None:
    """One client sends half its body and stops; others are answered meanwhile, and it is still waiting (its
    body timeout is far away), so they were not answered because it gave up."""
    synth = GateSynth()
    synth.gate.set()
    limits = ServerLimits(workers=1, body_timeout=120, header_timeout=120)
    with make_server("127.0.0.1", 0, None, synth, limits=limits).start() as server:
        slow_head = socket.create_connection((server.host, server.port), timeout=5)
        slow_body = socket.create_connection((server.host, server.port), timeout=5)
        with slow_head, slow_body:
            slow_head.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Le")
            slow_body.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            wait_until(lambda: server.connections == 2)
            for _ in range(3):
                assert post(server)[0] == 200
            sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
            assert sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.").content == b"ID3 gated Hi."
            for sock in (slow_head, slow_body):
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # not answered, not closed: still waiting for the rest


class HugeSynth:
    """Answers 32 MB: more than the kernel's socket buffers hold, so a client that stops reading is noticed."""

    def identity(self) -> str:
        return "huge"

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        return SpeechResult(b"ID3" + b"\0" * (32 << 20))

    async def aclose(self) -> None:
        pass


def test_a_client_that_does_not_take_its_answer_is_dropped_after_the_write_timeout() -> None:
    with make_server("127.0.0.1", 0, None, HugeSynth(), limits=ServerLimits(write_timeout=0.3)).start() as server:
        greedy = socket.socket()
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with greedy:
            greedy.connect((server.host, server.port))
            greedy.sendall(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(SPEECH), SPEECH)
            )
            wait_until(lambda: server.connections == 0)  # it never reads: dropped, not held
            assert post(server, timeout=30)[0] == 200  # and the server goes on


def test_shutdown_lets_the_request_in_progress_finish_and_takes_no_new_ones(
    gated: tuple[SpeechServer, GateSynth],
) -> None:
    server, synth = gated
    answers: list[tuple[int, dict[str, str], bytes]] = []
    inflight = threading.Thread(target=lambda: answers.append(post(server)))
    inflight.start()
    assert synth.started.acquire(timeout=5)
    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    wait_until(lambda: server._server.should_exit)  # noqa: SLF001 - the stop has begun

    def refused() -> bool:
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
        except OSError:
            return True
        return False

    wait_until(refused)  # no new connections while the one in progress is finished
    synth.gate.set()
    inflight.join(timeout=10)
    stopping.join(timeout=20)
    assert answers and answers[0][0] == 200 and answers[0][2] == b"ID3 gated Hello there."
