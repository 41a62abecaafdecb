"""A local OpenAI-compatible speech server: ``POST /v1/audio/speech`` answered by any ``Synthesizer``.

It lets every OpenAI client (the official SDK, this project's HTTP backend, other tools) speak offline through
the eSpeak NG voice, and gives tests and benchmarks a real endpoint. Requests and errors follow OpenAI's API:
the same fields, limits, status codes and ``{"error": {"message", "type", "param", "code"}}`` bodies.

Two halves, so that slow synthesis never stops the server from reading requests:

- **HTTP**: a Starlette app (``create_app``, testable in-process) served by uvicorn with the httptools parser,
  which reads requests, keeps connections alive and refuses malformed or ambiguous framing (two lengths, a
  length beside chunked), so no request can be smuggled past us. One event loop in one thread
  (``speech-server:PORT``) holds every connection: a connection costs a socket, not a thread. Bounds uvicorn
  has no setting for are kept by ``_Protocol``, a thin subclass of uvicorn's protocol that only arms timers
  and counts header bytes: ``idle_timeout`` for a connection's first request as for the next (then it is closed
  quietly), ``header_timeout`` and ``MAX_HEAD_BYTES`` for the request line and headers (then 408 or 431 and
  close), ``write_timeout`` for a client to take its answer (then the connection is dropped). The app keeps the
  body's: ``MAX_BODY_BYTES`` (413) and ``body_timeout`` (408). Beyond ``connections`` open at once, a request
  is answered 503 with ``Retry-After`` and its connection closed; further clients wait in the ``backlog``.
- **Synthesis**: CPU-bound, and the offline engine is a process-wide singleton, so more parallelism than cores
  only adds contention. The synthesizer's coroutines run on a second loop (``speech-loop``), at most
  ``workers`` at once (about the core count), whose blocking work goes to a pool of ``workers`` threads. A
  valid request waits for a worker in a queue of ``queue`` places; when that is full it is answered at once
  with ``503``, a ``Retry-After`` estimated from recent synthesis times, and an OpenAI-shaped error, which the
  official SDK (and this project's client) retries after that delay.

So the threads are a fixed set whatever the load: the HTTP loop, the synthesis loop and its workers.
Ctrl-C or SIGTERM stops accepting, lets the requests in progress finish (at most ``shutdown_timeout``),
then returns.

Access: ``make_server`` and ``create_app`` take any key (tests and embedding programs bind to loopback with
short ones); ``serve``, what ``audiobook serve`` runs, enforces the rules for people: a key comes from the
environment or a file (never argv, which ``ps`` shows), has at least ``MIN_KEY_CHARS`` characters, and an
address beyond loopback needs one unless ``allow_no_key`` says otherwise; the bearer key is compared in
constant time (``key_matches``, for any app of ours that checks one). One log line per request goes to stderr:
method, path, status, characters and milliseconds; never the key and never the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.addresses import is_loopback  # 0.0.0.0 is every interface: never loopback
from pipeline.asgi import StoppableServer
from pipeline.errors import AudiobookError, FatalAPIError, UsageError
from pipeline.models import SpeechResult, VoiceSpec
from pipeline.tts.base import Synthesizer

MAX_INPUT_CHARS = 4096  # OpenAI's limit for ``input``
MAX_BODY_BYTES = 1 << 20
MAX_HEAD_BYTES = 64 << 10  # request line and headers together
LINGER_S = 2.0  # after refusing a request mid-head: how long to read on so the client gets the answer, not a reset
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd", "espeak-ng")
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
SPEECH_PATH, MODELS_PATH = "/v1/audio/speech", "/v1/models"
SERVER_NAME = "audiobook-speech/3"
KEY_ENV = "AUDIOBOOK_SERVER_KEY"
MIN_KEY_CHARS = 16


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
    connections: int = 512  # open at once; a request beyond is a 503
    backlog: int = 1024  # the kernel caps it at net.core.somaxconn
    idle_timeout: float = 15.0  # for a request to start; longer than httpx's 5 s keep-alive, so clients close first
    header_timeout: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout: float = 30.0  # for the whole body (at most MAX_BODY_BYTES)
    write_timeout: float = 30.0  # for a client to take its answer
    synthesis_timeout: float = 600.0  # queue wait included
    shutdown_timeout: float = 10.0  # on Ctrl-C, for the requests in progress to finish

    def __post_init__(self) -> None:
        for name in ("workers", "queue", "connections", "backlog"):
            if getattr(self, name) < (0 if name == "queue" else 1):
                raise ValueError(f"ServerLimits.{name} is too small: {getattr(self, name)}")
        timeouts = ("idle_timeout", "header_timeout", "body_timeout", "write_timeout", "synthesis_timeout")
        for name in (*timeouts, "shutdown_timeout"):
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

    def response(self) -> Response:
        return Response(self.body(), self.status, self.headers, media_type="application/json")


def _bug() -> ApiError:
    """A bug of ours: logged with its traceback (never the request), answered 500 in the API's shape."""
    traceback.print_exc(file=sys.stderr)
    return ApiError(500, "The server had an error while processing your request.", type="server_error")


# ---------------------------------------------------------------------------------------- synthesis


class _Synthesis:
    """The synthesis side: its own loop and ``workers`` threads, a queue of ``queue`` places, and a 503 with a
    ``Retry-After`` from recent synthesis times beyond it. ``speak`` is awaited on the HTTP loop."""

    def __init__(self, synth: Synthesizer, limits: ServerLimits) -> None:
        self.synth, self.limits = synth, limits
        self.pending = 0  # speech requests admitted and not yet answered (touched on the HTTP loop only)
        self._service_s = 1.0  # recent synthesis time, for Retry-After
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(
            ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="speech-worker")
        )
        self._workers = asyncio.Semaphore(limits.workers)
        self._thread = threading.Thread(target=self._loop.run_forever, name="speech-loop", daemon=True)
        self._thread.start()
        self._closed = False
        self._close_lock = threading.Lock()

    async def speak(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """Admit the request to the synthesis queue or refuse it with 503, then wait for a worker's answer."""
        workers = self.limits.workers
        if self.pending >= workers + self.limits.queue:
            wait = max(1, min(60, math.ceil(self._service_s * (self.pending + 1) / workers)))
            raise ApiError(
                503,
                f"The server is overloaded: every speech worker is busy and the queue is full. "
                f"Please retry after {wait} seconds.",
                type="server_error",
                headers={"Retry-After": str(wait)},
            )
        self.pending += 1
        try:
            future = asyncio.run_coroutine_threadsafe(self._synthesis(text, spec), self._loop)
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
            self.pending -= 1

    async def _synthesis(self, text: str, spec: VoiceSpec) -> SpeechResult:
        """On the synthesis loop: wait for one of the ``workers`` places (the queue), then synthesize."""
        async with self._workers:
            t0 = time.perf_counter()
            result = await self.synth.synthesize(text, spec)
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)
            return result

    def close(self) -> None:
        """Close the synthesizer and stop the loop and its threads; safe to call more than once."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._run(self.synth.aclose(), timeout=30)
            self._run(self._loop.shutdown_default_executor(), timeout=30)
        except TimeoutError:  # a synthesis that will not end: leave it to finish on its own, still stop serving
            sys.stderr.write("warning: a speech synthesis was still running at shutdown\n")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)


# ---------------------------------------------------------------------------------------- the app


def key_matches(authorization: str, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <key>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("latin-1", "replace"), key.encode("latin-1", "replace"))


def _authorize(authorization: str, key: str) -> None:
    scheme, _, given = authorization.partition(" ")
    if not authorization or scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if not key_matches(authorization, key):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")


class _Gate:
    """Around every request, before routing: the path without a trailing slash, the bound on connections, the
    key, and the log line (method, path, status, characters, milliseconds; never the key, never the text)."""

    def __init__(self, app: ASGIApp, api_key: str | None, limits: ServerLimits, connections: Callable[[], int]):
        self.app, self.api_key, self.limits, self.connections = app, api_key, limits, connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope = {**scope, "path": scope["path"].rstrip("/") or "/", "chars": 0}
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.connections() > self.limits.connections:
                raise ApiError(
                    503,
                    "The server is overloaded: too many connections are open. Please retry in a second.",
                    type="server_error",
                    headers={"Retry-After": "1", "Connection": "close"},
                )
            if self.api_key is not None:
                headers = dict(scope["headers"])
                _authorize(headers.get(b"authorization", b"").decode("latin-1"), self.api_key)
        except ApiError as error:
            await error.response()(scope, receive, sending)
        else:
            await self.app(scope, receive, sending)
        finally:
            _log(scope["method"], scope["path"], status[0], scope["chars"], t0)


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every error of a handler answered in OpenAI's shape; a bug logged and answered 500, the server kept."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            return Response(status_code=499)
        except Exception:
            return _bug().response()

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    method, path = request.method, request.scope["path"]
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        allowed = ", ".join(m for m in allowed.split(", ") if m != "HEAD")
        error = ApiError(405, f"Method {method} is not allowed for {path}; use {allowed}.", headers={"Allow": allowed})
    elif exc.status_code == 404:
        error = ApiError(404, f"Invalid URL ({method} {path})")
    else:
        error = ApiError(exc.status_code, exc.detail, headers=exc.headers)
    return error.response()


async def _read_body(request: Request, limits: ServerLimits) -> bytes:
    """The body, refused with 413 beyond ``MAX_BODY_BYTES`` (by its length before reading any of it, when it
    says one) and 408 when it does not arrive within ``body_timeout``."""
    too_large = ApiError(413, f"Request body too large: at most {MAX_BODY_BYTES} bytes.")
    length = request.headers.get("content-length", "")  # the parser refused an invalid or a second one
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        if request.headers.get("expect", "").lower() == "100-continue":
            # The client waits to be told to send the body it announced: it never will be, so this connection
            # cannot carry another request. Otherwise uvicorn reads the unwanted body away and the connection
            # goes on, instead of closing on unread data, which the client would see as a reset.
            too_large.headers["Connection"] = "close"
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    too_large.headers["Connection"] = "close"  # the rest of the chunks will not be read
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "Request body not received in time.", headers={"Connection": "close"}) from None
    return b"".join(chunks)


def create_app(
    synth: Synthesizer | None = None,
    api_key: str | None = None,
    *,
    limits: ServerLimits | None = None,
    connections: Callable[[], int] = lambda: 0,
) -> Starlette:
    """The speech API as a Starlette app, to serve with any ASGI server or test in-process (Starlette's
    ``TestClient``). ``connections`` tells how many connections are open, for the 503 beyond
    ``limits.connections``. Without ``synth`` it speaks with the offline voice. The synthesis side starts at
    once and stops at the app's shutdown (its lifespan) or with ``app.state.synthesis.close()``. No access
    rules here (see ``serve``): any key, or none, is taken."""
    if synth is None:
        from pipeline.tts.espeak import EspeakSynth

        synth = EspeakSynth()
    limits = limits or ServerLimits()
    synthesis = _Synthesis(synth, limits)

    async def speech(request: Request) -> Response:
        fields = _parse_json(await _read_body(request, limits))
        request.scope["chars"] = len(fields["input"]) if isinstance(fields.get("input"), str) else 0
        text, spec = _speech_request(fields)
        result = await synthesis.speak(text, spec)
        return Response(result.audio, media_type=CONTENT_TYPES[spec.response_format or "mp3"])

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model(m) for m in MODELS]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await asyncio.to_thread(synthesis.close)

    app = Starlette(
        routes=[
            Route(SPEECH_PATH, _endpoint(speech), methods=["POST"]),
            Route(MODELS_PATH, _endpoint(models), methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.synthesis = synthesis
    app.add_middleware(_Gate, api_key=api_key, limits=limits, connections=connections)
    return app


def _log(method: str, path: str, status: int, chars: int, t0: float | None) -> None:
    ms = (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0
    shown = "".join(c if c.isprintable() else "?" for c in path)[:120]
    sys.stderr.write(f"{method[:16]} {shown} {status} {chars} chars {ms:.0f} ms\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------- request fields


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


# ---------------------------------------------------------------------------------------- serving


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the timers and the header cap it has no setting for (see the module
    docstring). It parses nothing itself: it only watches the parser's callbacks and the transport's flow."""

    limits: ClassVar[ServerLimits]  # set on a subclass per server (_protocol_for)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False
        # uvicorn arms its keep-alive timer only after an answer: a connection that never asks is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(self.limits.idle_timeout, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # the next request gets idle_timeout, not uvicorn's 5 s
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.limits.idle_timeout, self.timeout_keep_alive_handler
            )

    # The head: from the request's first byte to the end of its headers.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout, self._refuse, ApiError(408, "Request headers not received in time.")
        )

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """What the parser refuses (a malformed request line, ambiguous framing): 400 in the API's shape."""
        self._refuse(ApiError(400, f"{msg.rstrip('.')}: malformed or ambiguous HTTP/1.1."))

    def _count(self, size: int) -> bool:
        """Whether the head is still within ``MAX_HEAD_BYTES`` (else it is refused with 431)."""
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES and not self._refused:
            self._refuse(ApiError(431, f"Request headers too large: at most {MAX_HEAD_BYTES} bytes."))
        return not self._refused

    def _refuse(self, error: ApiError) -> None:
        """Answer a request that never reached the app (its head malformed, too slow or too large), then close:
        the parser is mid-request, so nothing more on this connection can be read as a request."""
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        body = error.body()
        head = [f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}".encode()]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        # Close our side only, and read away (data_received drops it) what the client still sends for a
        # moment: closing a socket with unread data makes the kernel reset it, and the client would see the
        # reset instead of this answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        _log("-", "-", error.status, 0, t0=None)

    # The answer: a client that stops reading it is dropped after write_timeout.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()


def _protocol_for(limits: ServerLimits) -> type[_Protocol]:
    return type("_Protocol", (_Protocol,), {"limits": limits})


class SpeechServer:
    """The speech app under uvicorn, bound and listening once built. ``start()`` serves from a background
    thread, ``serve_forever()`` in the caller's; ``shutdown()`` stops either, closes the socket and the
    synthesizer, and may be called more than once (and on a server that never served)."""

    def __init__(
        self, host: str, port: int, api_key: str | None, synth: Synthesizer, limits: ServerLimits | None = None
    ) -> None:
        self.limits = limits or ServerLimits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host.strip("[]"), port), family=family, backlog=self.limits.backlog)
        self.app = create_app(synth, api_key, limits=self.limits, connections=lambda: self.connections)
        self._synthesis: _Synthesis = self.app.state.synthesis
        config = uvicorn.Config(
            self.app,
            http=_protocol_for(self.limits),
            ws="none",
            lifespan="on",
            log_config=None,  # the process's logging stays ours; uvicorn's warnings reach stderr unformatted
            access_log=False,  # our own line per request (_Gate), which never shows the key
            server_header=False,
            headers=[("Server", SERVER_NAME)],
            proxy_headers=False,  # nothing in front of us to trust
            backlog=self.limits.backlog,
            timeout_graceful_shutdown=math.ceil(self.limits.shutdown_timeout),
        )
        self._server = StoppableServer(config)
        self._thread: threading.Thread | None = None
        self._served = False
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
        return len(self._server.server_state.connections)

    @property
    def pending(self) -> int:
        """Speech requests being synthesized or queued for a worker."""
        return self._synthesis.pending

    def serve_forever(self) -> None:
        if self._closed or self._served:
            raise RuntimeError("the server was shut down" if self._closed else "the server is serving already")
        self._served = True
        self._server.run(sockets=[self.socket])

    def start(self) -> SpeechServer:
        self._thread = threading.Thread(target=self.serve_forever, name=f"speech-server:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10  # so that shutdown() finds it serving, never half started
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def shutdown(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.limits.shutdown_timeout + 10)
        self.socket.close()
        self._synthesis.close()

    def __enter__(self) -> SpeechServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


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
    """Serve until Ctrl-C or SIGTERM, then return normally. ``ready`` receives the base URL once the port is
    bound. Refuses (``UsageError``, before binding) what ``check_access`` refuses."""
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
