"""A local OpenAI-compatible speech server: ``POST /v1/audio/speech`` answered by any ``Synthesizer``.

It lets every OpenAI client (the official SDK, this project's HTTP backend, other tools) speak offline through
the eSpeak NG voice, and gives tests and benchmarks a real endpoint. Requests and errors follow OpenAI's API:
the same fields, limits, status codes and ``{"error": {"message", "type", "param", "code"}}`` bodies.

Standard library only (``ThreadingHTTPServer``): one thread per connection, and one asyncio loop thread that
runs the synthesizer's coroutines, so an async client with its own connection pool works as well as the
offline engine (which serializes itself). One log line per request goes to stderr: method, path, status,
characters and milliseconds; never the key and never the text.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import AudiobookError, FatalAPIError, UsageError
from pipeline.models import VoiceSpec
from pipeline.tts.base import Synthesizer

MAX_INPUT_CHARS = 4096  # OpenAI's limit for ``input``
MAX_BODY_BYTES = 1 << 20
MIN_SPEED, MAX_SPEED = 0.25, 4.0
SYNTHESIS_TIMEOUT_S = 600.0
MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd", "espeak-ng")
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
SPEECH_PATH, MODELS_PATH = "/v1/audio/speech", "/v1/models"
ROUTES = {SPEECH_PATH: "POST", MODELS_PATH: "GET"}


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SpeechServer(ThreadingHTTPServer):
    """The HTTP server. ``start()`` serves from a background thread, ``serve_forever()`` in the caller's;
    ``shutdown()`` stops either, closes the socket and the synthesizer, and may be called more than once."""

    daemon_threads = True  # an idle keep-alive connection must not hold up Ctrl-C

    def __init__(self, host: str, port: int, api_key: str | None, synth: Synthesizer) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.api_key = api_key.encode() if api_key else None
        self.synth = synth
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="speech-loop", daemon=True)
        self._loop_thread.start()
        self._started = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The base URL clients use (``OPENAI_BASE_URL``), ``/v1`` included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result (from a request thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=SYNTHESIS_TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            raise

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        self._started = True
        super().serve_forever(poll_interval)

    def start(self) -> SpeechServer:
        self._started = True
        self._thread = threading.Thread(target=self.serve_forever, name=f"speech-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._started:  # socketserver's shutdown() waits forever for a loop that never ran
            super().shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.server_close()
        try:
            self.run(self.synth.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
            if not self._loop.is_running():
                self._loop.close()

    def __enter__(self) -> SpeechServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Handler(BaseHTTPRequestHandler):
    server: SpeechServer
    protocol_version = "HTTP/1.1"  # keep-alive: SDK clients reuse their connections
    server_version = "audiobook-speech/1"
    timeout = 120  # seconds an idle connection may sit before its thread gives up

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log (it would print the raw request line); see ``_log``."""

    def _dispatch(self) -> None:
        self._t0 = time.perf_counter()
        self._chars = 0
        self._path = path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            body = self._read_body()
            self._authorize()
            allowed = ROUTES.get(path)
            if allowed is None:
                raise ApiError(404, f"Invalid URL ({self.command} {path})")
            if self.command != allowed:
                raise ApiError(405, f"Method {self.command} is not allowed for {path}; use {allowed}.")
            if path == SPEECH_PATH:
                self._speech(body)
            else:
                self._send_json(200, {"object": "list", "data": [_model(m) for m in MODELS]})
        except ApiError as error:
            self._send_error(error, allow=ROUTES.get(path))
        except Exception:  # a bug: answer 500 in the API's shape, keep serving, log without the text
            traceback.print_exc(file=sys.stderr)
            self._send_error(
                ApiError(500, "The server had an error while processing your request.", type="server_error")
            )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "Chunked request bodies are not supported: send a Content-Length.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Invalid Content-Length header.") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread: the connection cannot be reused
            raise ApiError(413, f"Request body too large: at most {MAX_BODY_BYTES} bytes.")
        return self.rfile.read(length) if length else b""

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not hmac.compare_digest(given.strip().encode(), key):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _speech(self, body: bytes) -> None:
        request = _parse_json(body)
        model = _string(request, "model")
        text = _string(request, "input")
        voice = _string(request, "voice")
        self._chars = len(text)
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
        spec = VoiceSpec(model, voice, instructions or None, speed, fmt if "response_format" in request else None)
        try:
            result = self.server.run(self.server.synth.synthesize(text, spec))
        except FatalAPIError as exc:  # the request itself is wrong (unknown voice...): the client's error
            status = exc.status if exc.status and 400 <= exc.status < 500 else 400
            param = "voice" if str(exc).startswith("unknown voice") else None
            raise ApiError(status, str(exc), param) from None
        except (AudiobookError, FutureTimeout) as exc:
            message = str(exc) or "speech synthesis timed out"
            raise ApiError(500, f"Speech synthesis failed: {message}", type="server_error") from None
        self._send(200, result.audio, CONTENT_TYPES[fmt])

    def _send_json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send_error(self, error: ApiError, allow: str | None = None) -> None:
        headers = {"Allow": allow} if error.status == 405 and allow else None
        self._send(error.status, error.body(), headers=headers)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        # Logged before the body goes out, so the line exists by the time the client has its answer.
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _log(self, status: int) -> None:
        ms = (time.perf_counter() - self._t0) * 1000
        shown = "".join(c if c.isprintable() else "?" for c in self._path)[:120]
        sys.stderr.write(f"{self.command} {shown} {status} {self._chars} chars {ms:.0f} ms\n")
        sys.stderr.flush()


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


def make_server(
    host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, synth: Synthesizer | None = None
) -> SpeechServer:
    """A bound server, not yet serving: call ``start()`` or ``serve_forever()``. Port 0 picks a free port
    (see ``.url``). Without ``synth`` it speaks with the offline voice."""
    if synth is None:
        from pipeline.tts.espeak import EspeakSynth

        synth = EspeakSynth()
    try:
        return SpeechServer(host, port, api_key, synth)
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
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until Ctrl-C, then return normally. ``ready`` receives the base URL once the port is bound."""
    server = make_server(host, port, api_key, synth)
    if not _is_loopback(server.host) and api_key is None:
        sys.stderr.write(f"warning: serving on {server.host} without an API key: anyone who can reach it may use it\n")
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
