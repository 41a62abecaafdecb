"""A local OpenAI-compatible speech server: ``POST /v1/audio/speech`` answered by any ``Synthesizer``.

It lets every OpenAI client (the official SDK, this project's HTTP backend, other tools) speak offline through
the eSpeak NG voice, and gives tests and benchmarks a real endpoint. Requests and errors follow OpenAI's API:
the same fields, limits, status codes and ``{"error": {"message", "type", "param", "code"}}`` bodies.

Standard library only, in two halves so that slow synthesis never stops the server from reading requests:

- **Connections**: one asyncio loop in one thread (``speech-server:PORT``) accepts, reads and answers every
  connection. A connection costs a socket and a coroutine, not a thread, so idle keep-alive clients and slow
  senders cannot exhaust anything but their own bound: at most ``ServerLimits.connections`` are open (further
  ones wait in the listen backlog of ``backlog``, which the kernel holds, instead of being reset), and each
  wait has a deadline: ``idle_timeout`` for a request to start (then the connection is closed quietly),
  ``header_timeout`` for its headers and ``body_timeout`` for its body (then 408 and close), ``write_timeout``
  for a client to take its answer (then the connection is dropped).
- **Synthesis**: CPU-bound, and the offline engine is a process-wide singleton, so more parallelism than cores
  only adds contention. The synthesizer's coroutines run on a second loop (``speech-loop``), at most
  ``workers`` at once (about the core count), whose blocking work goes to a pool of ``workers`` threads. A
  valid request waits for a worker in a queue of ``queue`` places; when that is full it is answered at once
  with ``503``, a ``Retry-After`` estimated from recent synthesis times, and an OpenAI-shaped error, which the
  official SDK (and this project's client) retries after that delay.

So the threads are a fixed set whatever the load: the connection loop, the synthesis loop and its workers.

Access: ``make_server`` takes any key (tests and embedding programs bind to loopback with short ones);
``serve``, what ``audiobook serve`` runs, enforces the rules for people: a key comes from the environment or a
file (never argv, which ``ps`` shows), has at least ``MIN_KEY_CHARS`` characters, and an address beyond
loopback needs one unless ``allow_no_key`` says otherwise. One log line per request goes to stderr: method,
path, status, characters and milliseconds; never the key and never the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import http.client
import io
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.addresses import is_loopback  # 0.0.0.0 is every interface: never loopback
from pipeline.errors import AudiobookError, FatalAPIError, UsageError
from pipeline.models import SpeechResult, VoiceSpec
from pipeline.tts.base import Synthesizer

MAX_INPUT_CHARS = 4096  # OpenAI's limit for ``input``
MAX_BODY_BYTES = 1 << 20
MAX_HEAD_BYTES = 64 << 10  # request line and headers together
LINGER_S = 2.0  # after refusing an unread body: how long to drain it so the client reads our answer, not a reset
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd", "espeak-ng")
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
SPEECH_PATH, MODELS_PATH = "/v1/audio/speech", "/v1/models"
ROUTES = {SPEECH_PATH: "POST", MODELS_PATH: "GET"}
SERVER_NAME = "audiobook-speech/2"
KEY_ENV = "AUDIOBOOK_SERVER_KEY"
MIN_KEY_CHARS = 16
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP method is a token (RFC 9110)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


@dataclass(frozen=True)
class ServerLimits:
    """How much the server takes on at once and how long it waits for a client (see the module docstring)."""

    workers: int = field(default_factory=_cores)  # syntheses at once
    queue: int = 64  # valid speech requests waiting for a worker; one more is a 503
    connections: int = 512  # open at once; more wait in the listen backlog
    backlog: int = 1024  # the kernel caps it at net.core.somaxconn
    idle_timeout: float = 15.0  # for a request to start; longer than httpx's 5 s keep-alive, so clients close first
    header_timeout: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout: float = 30.0  # for the whole body (at most MAX_BODY_BYTES)
    write_timeout: float = 30.0  # for a client to take its answer
    synthesis_timeout: float = 600.0  # queue wait included

    def __post_init__(self) -> None:
        for name in ("workers", "queue", "connections", "backlog"):
            if getattr(self, name) < (0 if name == "queue" else 1):
                raise ValueError(f"ServerLimits.{name} is too small: {getattr(self, name)}")
        for name in ("idle_timeout", "header_timeout", "body_timeout", "write_timeout", "synthesis_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be positive")


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: http.client.HTTPMessage
    body: bytes
    keep_alive: bool


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


class _Refused(Exception):
    """A request that gets an error and then the connection closed: it could not be read to its end."""

    def __init__(self, error: ApiError, method: str = "-", path: str = "-", body_read: bool = False) -> None:
        super().__init__(error.message)
        self.error, self.method, self.path, self.body_read = error, method, path, body_read


class _Gone(Exception):
    """The client went away or stayed silent between requests: close without an answer."""


class SpeechServer:
    """The HTTP server, bound and listening once built. ``start()`` serves from a background thread,
    ``serve_forever()`` in the caller's; ``shutdown()`` stops either, closes the socket and the synthesizer, and
    may be called more than once (and on a server that never served)."""

    def __init__(
        self, host: str, port: int, api_key: str | None, synth: Synthesizer, limits: ServerLimits | None = None
    ) -> None:
        self.limits = limits or ServerLimits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host.strip("[]"), port), family=family, backlog=self.limits.backlog)
        self.socket.setblocking(False)
        self.api_key = api_key.encode() if api_key else None
        self.synth = synth
        self._loop = asyncio.new_event_loop()  # connections; runs in serve_forever's thread
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(self.limits.connections)
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._pending = 0  # speech requests admitted and not yet answered (touched on the connection loop only)
        self._service_s = 1.0  # recent synthesis time, for Retry-After
        # Synthesis: its own loop, at most `workers` coroutines at once and `workers` threads for blocking work.
        self._speech_loop = asyncio.new_event_loop()
        self._speech_loop.set_default_executor(
            ThreadPoolExecutor(max_workers=self.limits.workers, thread_name_prefix="speech-worker")
        )
        self._workers = asyncio.Semaphore(self.limits.workers)
        self._speech_thread = threading.Thread(target=self._speech_loop.run_forever, name="speech-loop", daemon=True)
        self._speech_thread.start()
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def host(self) -> str:
        return self.server_address[0]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        """The base URL clients use (``OPENAI_BASE_URL``), ``/v1`` included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def connections(self) -> int:
        """Connections open now (accepted and not yet closed)."""
        return len(self._tasks)

    @property
    def pending(self) -> int:
        """Speech requests being synthesized or queued for a worker."""
        return self._pending

    # ------------------------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        if self._closed:
            raise RuntimeError("the server was shut down")
        self._main = self._loop.create_task(self._serve())
        self._loop.call_soon(self._running.set)
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C and SIGTERM end serving cleanly. A KeyboardInterrupt raised at an arbitrary point inside the
            # event loop can leave it unable to finish closing its connections (seen under load: a hang).
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._stop.set)
        try:
            self._loop.run_until_complete(self._main)
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._loop.remove_signal_handler(sig)

    def start(self) -> SpeechServer:
        self._thread = threading.Thread(target=self.serve_forever, name=f"speech-server:{self.port}", daemon=True)
        self._thread.start()
        self._running.wait(timeout=10)  # so that shutdown() finds the loop running, never half started
        return self

    def shutdown(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        main = self._main
        if main is not None and not main.done():
            if self._loop.is_running():  # serving in another thread
                self._loop.call_soon_threadsafe(self._stop.set)
                if self._thread is not None:
                    self._thread.join(timeout=10)
                else:
                    deadline = time.monotonic() + 10
                    while self._loop.is_running() and time.monotonic() < deadline:
                        time.sleep(0.01)
            else:  # serve_forever was interrupted here (Ctrl-C): let it close its connections
                self._stop.set()
                self._loop.run_until_complete(main)
        self.socket.close()
        if not self._loop.is_running():
            self._loop.close()
        try:
            self._run_speech(self.synth.aclose(), timeout=30)
            self._run_speech(self._speech_loop.shutdown_default_executor(), timeout=30)
        except TimeoutError:  # a synthesis that will not end: leave it to finish on its own, still stop serving
            sys.stderr.write("warning: a speech synthesis was still running at shutdown\n")
        finally:
            self._speech_loop.call_soon_threadsafe(self._speech_loop.stop)
            self._speech_thread.join(timeout=5)
            if not self._speech_loop.is_running():
                self._speech_loop.close()

    def _run_speech(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._speech_loop).result(timeout=timeout)

    def __enter__(self) -> SpeechServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------ connections

    async def _serve(self) -> None:
        accepting = asyncio.create_task(self._accept())
        try:
            await self._stop.wait()
        finally:
            accepting.cancel()
            # gather, not await: should Ctrl-C have landed in that task, the connections must still be closed.
            await asyncio.gather(accepting, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # at the bound, new clients wait in the kernel's backlog
            try:
                conn, _ = await loop.sock_accept(self.socket)
            except OSError as exc:
                self._slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    sys.stderr.write(f"warning: cannot accept a connection: {exc.strerror}; retrying\n")
                    await asyncio.sleep(0.1)
                continue  # ECONNABORTED and the like: that client is gone
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._connection(conn))
            self._tasks.add(task)
            task.add_done_callback(self._connection_closed)

    def _connection_closed(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _connection(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEAD_BYTES)
        except BaseException:
            conn.close()
            raise
        try:
            await self._converse(reader, writer)
        except (ConnectionError, TimeoutError):
            writer.transport.abort()  # reset by the client, or it would not take its answer
        except asyncio.CancelledError:
            writer.transport.abort()  # shutting down
            raise
        except Exception:  # a bug: log it, drop this connection, keep serving the others
            traceback.print_exc(file=sys.stderr)
            writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one connection, one after another, until either side closes it."""
        while True:
            try:
                request, t0 = await self._read_request(reader, writer)
            except _Gone:
                return
            except _Refused as refused:
                _log(refused.method, refused.path, refused.error.status, 0, t0=None)
                await self._write(writer, _error_response(refused.error), keep_alive=False)
                if not refused.body_read:
                    await _linger(reader, writer)
                return
            response, chars = await self._respond(request)
            _log(request.method, request.path, response.status, chars, t0)
            keep_alive = request.keep_alive and not self._stop.is_set()
            await self._write(writer, response, keep_alive=keep_alive, head_only=request.method == "HEAD")
            if not keep_alive:
                return

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[_Request, float]:
        limits = self.limits
        try:
            async with asyncio.timeout(limits.idle_timeout):
                first = await reader.read(1)
        except TimeoutError:
            raise _Gone from None
        if not first:
            raise _Gone
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(limits.header_timeout):
                head = first + await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _Refused(ApiError(408, "Request headers not received in time.")) from None
        except asyncio.LimitOverrunError:
            raise _Refused(ApiError(431, f"Request headers too large: at most {MAX_HEAD_BYTES} bytes.")) from None
        except asyncio.IncompleteReadError:
            raise _Gone from None
        method, path, headers, keep_alive = _parse_head(head.lstrip(b"\r\n"))

        if headers.get("Transfer-Encoding"):
            error = ApiError(411, "Chunked request bodies are not supported: send a Content-Length.")
            raise _Refused(error, method, path)
        length = _content_length(headers, method, path)
        if length and headers.get("Expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(limits.body_timeout):
                body = await reader.readexactly(length) if length else b""
        except TimeoutError:
            raise _Refused(ApiError(408, "Request body not received in time."), method, path) from None
        except asyncio.IncompleteReadError:
            raise _Gone from None
        return _Request(method, path, headers, body, keep_alive), t0

    async def _write(
        self, writer: asyncio.StreamWriter, response: _Response, *, keep_alive: bool, head_only: bool = False
    ) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            f"Server: {SERVER_NAME}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()

    # ------------------------------------------------------------------------------------ requests

    async def _respond(self, request: _Request) -> tuple[_Response, int]:
        """The answer to one request, and the characters it asked to speak (for the log)."""
        path = request.path
        chars = 0
        try:
            self._authorize(request.headers)
            allowed = ROUTES.get(path)
            if allowed is None:
                raise ApiError(404, f"Invalid URL ({request.method} {path})")
            if request.method != allowed:
                raise ApiError(405, f"Method {request.method} is not allowed for {path}; use {allowed}.")
            if path == MODELS_PATH:
                return _json_response(200, {"object": "list", "data": [_model(m) for m in MODELS]}), 0
            fields = _parse_json(request.body)
            chars = len(fields["input"]) if isinstance(fields.get("input"), str) else 0
            text, spec = _speech_request(fields)
            result = await self._synthesize(text, spec)
            return _Response(200, result.audio, CONTENT_TYPES[spec.response_format or "mp3"]), chars
        except ApiError as error:
            if error.status == 405:
                error.headers["Allow"] = ROUTES[path]
            return _error_response(error), chars
        except Exception:  # a bug: answer 500 in the API's shape, keep serving, log without the text
            traceback.print_exc(file=sys.stderr)
            bug = ApiError(500, "The server had an error while processing your request.", type="server_error")
            return _error_response(bug), chars

    def _authorize(self, headers: http.client.HTTPMessage) -> None:
        key = self.api_key
        if key is None:
            return
        header = headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), key):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """Admit the request to the synthesis queue or refuse it with 503, then wait for a worker's answer."""
        workers = self.limits.workers
        if self._pending >= workers + self.limits.queue:
            wait = max(1, min(60, math.ceil(self._service_s * (self._pending + 1) / workers)))
            raise ApiError(
                503,
                f"The server is overloaded: every speech worker is busy and the queue is full. "
                f"Please retry after {wait} seconds.",
                type="server_error",
                headers={"Retry-After": str(wait)},
            )
        self._pending += 1
        try:
            future = asyncio.run_coroutine_threadsafe(self._synthesis(text, spec), self._speech_loop)
            async with asyncio.timeout(self.limits.synthesis_timeout):
                return await asyncio.wrap_future(future)  # cancelling this cancels the synthesis too
        except FatalAPIError as exc:  # the request itself is wrong (unknown voice...): the client's error
            status = exc.status if exc.status and 400 <= exc.status < 500 else 400
            param = "voice" if str(exc).startswith("unknown voice") else None
            raise ApiError(status, str(exc), param) from None
        except (AudiobookError, TimeoutError) as exc:
            message = str(exc) or "speech synthesis timed out"
            raise ApiError(500, f"Speech synthesis failed: {message}", type="server_error") from None
        finally:
            self._pending -= 1

    async def _synthesis(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """On the synthesis loop: wait for one of the ``workers`` places (the queue), then synthesize."""
        async with self._workers:
            t0 = time.perf_counter()
            result = await self.synth.synthesize(text, spec)
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)
            return result


# ---------------------------------------------------------------------------------------- HTTP pieces


def _parse_head(head: bytes) -> tuple[str, str, http.client.HTTPMessage, bool]:
    """Method, path, headers and whether the client keeps the connection, from the bytes before the body."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise _Refused(ApiError(400, "Malformed request line."))
    method, target, version = parts
    path = urlsplit(target).path.rstrip("/") or "/"
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Refused(ApiError(505, f"HTTP version not supported: {version[:16]!r}; use HTTP/1.1."), method, path)
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:  # more than 100 headers, or one line over 64 KiB
        raise _Refused(ApiError(431, "Too many request headers."), method, path) from None
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    return method, path, headers, keep_alive


def _content_length(headers: http.client.HTTPMessage, method: str, path: str) -> int:
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        return 0
    value = values.pop()
    if values or not value.isdigit():  # two different lengths is how requests are smuggled
        raise _Refused(ApiError(400, "Invalid Content-Length header."), method, path)
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise _Refused(ApiError(413, f"Request body too large: at most {MAX_BODY_BYTES} bytes."), method, path)
    return length


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close our side, then read and discard what the client still sends for a moment: closing a socket with
    unread data makes the kernel reset it, and the client would see the reset instead of our answer."""
    with contextlib.suppress(OSError, TimeoutError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(1 << 16):
                pass


def _json_response(status: int, payload: object) -> _Response:
    return _Response(status, json.dumps(payload).encode())


def _error_response(error: ApiError) -> _Response:
    return _Response(error.status, error.body(), headers=error.headers)


def _log(method: str, path: str, status: int, chars: int, t0: float | None) -> None:
    ms = (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0
    shown = "".join(c if c.isprintable() else "?" for c in path)[:120]
    sys.stderr.write(f"{method[:16]} {shown} {status} {chars} chars {ms:.0f} ms\n")
    sys.stderr.flush()


def _speech_request(request: dict[str, Any]) -> tuple[str, VoiceSpec]:
    model = _string(request, "model")
    text = _string(request, "input")
    voice = _string(request, "voice")
    if not text:
        raise ApiError(
            400,
            "Invalid 'input': empty string. Expected a string with minimum length 1.",
            "input",
            "empty_string",
        )
    if len(text) > MAX_INPUT_CHARS:
        raise ApiError(
            400,
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{MAX_INPUT_CHARS}, but got a string with length {len(text)} instead.",
            "input",
            "string_above_max_length",
        )
    instructions = _string(request, "instructions", required=False)
    speed = _speed(request.get("speed"))
    fmt = _string(request, "response_format", required=False) or "mp3"
    if fmt not in CONTENT_TYPES:
        raise ApiError(
            400,
            f"Unsupported response_format {fmt!r}: this server answers {' or '.join(CONTENT_TYPES)}.",
            "response_format",
            "unsupported_value",
        )
    return text, VoiceSpec(model, voice, instructions or None, speed, fmt if "response_format" in request else None)


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "audiobook-pipeline"}


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON "
            "payload (Content-Type: application/json).",
        ) from None
    if not isinstance(request, dict):
        raise ApiError(400, "Invalid request body: expected a JSON object.")
    return request


def _string(request: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = request.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        return ""
    if not isinstance(value, str):
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected a string, but got {type(value).__name__} instead.",
            name,
            "invalid_type",
        )
    return value


def _speed(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "Invalid type for 'speed': expected a number.", "speed", "invalid_type")
    if not MIN_SPEED <= value <= MAX_SPEED:
        bound = "less than the minimum" if value < MIN_SPEED else "greater than the maximum"
        limit = MIN_SPEED if value < MIN_SPEED else MAX_SPEED
        code = "decimal_below_min_value" if value < MIN_SPEED else "decimal_above_max_value"
        raise ApiError(400, f"Invalid 'speed': {value} is {bound} of {limit}.", "speed", code)
    return float(value)


# ---------------------------------------------------------------------------------------- access rules


def check_key(key: str, source: str) -> None:
    """Refuse a key that is easy to guess or cannot travel in a header, naming where it came from, never it."""
    if len(key) < MIN_KEY_CHARS:
        raise UsageError(
            f"the server key from {source} is shorter than {MIN_KEY_CHARS} characters: use a long random one, "
            f"e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not all(33 <= ord(c) <= 126 for c in key):
        raise UsageError(f"the server key from {source} must be printable ASCII without spaces")


def read_api_key(key_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The server key: the first line of ``key_file`` (whitespace stripped) when given, else ``$KEY_ENV``, else
    None. Checked with ``check_key``; every failure is a one-line ``UsageError`` that never shows the key."""
    if key_file is not None:
        try:
            with key_file.open("rb") as f:
                line = f.readline(4096)
        except OSError as exc:
            raise UsageError(f"cannot read the key file {key_file}: {exc.strerror or exc}") from None
        try:
            key = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UsageError(f"the key file {key_file} is not UTF-8 text") from None
        if not key:
            raise UsageError(f"the key file {key_file} has no key on its first line")
        check_key(key, f"the key file {key_file}")
        return key
    key = environ.get(KEY_ENV, "").strip()
    if not key:
        return None
    check_key(key, f"${KEY_ENV}")
    return key


def check_access(host: str, api_key: str | None, *, allow_no_key: bool = False) -> None:
    """The rules of ``serve``: a key long enough, and one required beyond loopback unless ``allow_no_key``."""
    if api_key is not None:
        check_key(api_key, "serve()'s api_key")
    elif not is_loopback(host) and not allow_no_key:
        raise UsageError(
            f"refusing to serve on {host} without a key: anyone who can reach it could use it; put a key in "
            f"${KEY_ENV} or a file given with --api-key-file, or pass --allow-no-key"
        )


# ---------------------------------------------------------------------------------------- entry points


def make_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    synth: Synthesizer | None = None,
    *,
    limits: ServerLimits | None = None,
) -> SpeechServer:
    """A bound server, not yet serving: call ``start()`` or ``serve_forever()``. Port 0 picks a free port
    (see ``.url``). Without ``synth`` it speaks with the offline voice. No access rules here (see ``serve``)."""
    if synth is None:
        from pipeline.tts.espeak import EspeakSynth

        synth = EspeakSynth()
    try:
        return SpeechServer(host, port, api_key, synth, limits)
    except OSError as exc:  # port taken, address not on this machine, no permission for a low port
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
        ) from exc


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    synth: Synthesizer | None = None,
    *,
    allow_no_key: bool = False,
    limits: ServerLimits | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until Ctrl-C, then return normally. ``ready`` receives the base URL once the port is bound.
    Refuses (``UsageError``, before binding) what ``check_access`` refuses."""
    check_access(host, api_key, allow_no_key=allow_no_key)
    server = make_server(host, port, api_key, synth, limits=limits)
    if not is_loopback(server.host) and api_key is None:
        sys.stderr.write(f"warning: serving on {server.host} without an API key: anyone who can reach it may use it\n")
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
