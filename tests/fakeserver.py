"""A local OpenAI-compatible speech server that misbehaves on demand, for tests and the benchmark.

It is a real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, one thread per connection, HTTP/1.1
keep-alive), so the client's connection pool, timeouts and dropped connections are exercised for real::

    with FakeSpeechServer(api_key="test-key") as srv:
        srv.inject(Fault.rate_limit(retry_after=2), Fault.status(503))   # the next two requests fail
        srv.inject_for(lambda body: "cursed" in body["input"], Fault.quota())
        ... OpenAISpeech(srv.url, "test-key") ...
        srv.requests, srv.served_inputs(), srv.max_in_flight

It checks requests the way the real API does (key, path, JSON body, required strings, nulls, lengths, speed)
and answers real MP3 audio whose duration follows the text (``ms_per_char`` per character, divided by
``speed``). The audio is cut from one tone encoded at start-up with the MP3 bit reservoir off: every frame is
384 bytes, 24 ms, and decodes on its own, so an answer is just the first K frames: no encoding per request.

It can also enforce a key's rate limit as OpenAI does (``rpm``, ``burst``, ``tpm``; see ``RateBucket``): a
refused request gets a 429 with ``retry-after-ms`` and ``retry-after``, and every answer carries
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` unless ``rate_headers=False``::

    with FakeSpeechServer(rpm=60, burst=5, clock=fake_clock) as srv:
        ... srv.stats().rate_limited ...

It also transcribes (``POST /v1/audio/transcriptions``, multipart, as OpenAI's): it remembers which text
each answer really spoke, faults included (``Fault.drop_sentence()`` speaks the input less one sentence), and
answers that text with a good recogniser's seeded noise (see ``Transcripts``)::

    srv.inject(Fault.drop_sentence()); srv.inject_transcription(Fault.status(503))
    srv.transcripts.spoken(audio)   # the text an answer really says

Run it in its own process (the benchmark does, to keep its work off the client's GIL)::

    python -m tests.fakeserver --port 0 --latency 0.2 [--api-key K] [--rpm 120 --burst 2 --tpm 40000]
    # first stdout line: the URL; last stderr line: "fakeserver: N requests, M served, max K in flight, L rate-limited"
"""

from __future__ import annotations

import argparse
import array
import email.parser
import email.policy
import functools
import hashlib
import io
import json
import math
import random
import re
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from pipeline.media import ffmpeg_exe

RATE = 24_000
FRAME_BYTES = 384  # MPEG-2 Layer III, 128 kbps, 24 kHz, no padding: 72 * 128000 / 24000
FRAME_MS = 24  # 576 samples at 24 kHz
MIN_FRAMES = 2  # ffmpeg's probe wants two consecutive frames before it calls a stream MP3
MAX_INPUT = 4096
SPEECH = "/v1/audio/speech"
MODELS = "/v1/models"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SERVED_FORMATS = ("mp3", "wav", "pcm")
FIELDS = ("model", "input", "voice", "instructions", "response_format", "speed", "stream_format")
MODEL_IDS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd")


# --- faults ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One way to misbehave. Build them with the class methods (also exported as module functions)."""

    kind: str
    code: int = 200
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    should_retry: bool | None = None  # sets x-should-retry
    param: str | None = None  # the request field a 400 blames

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0, *, retry_after_ms: float | None = None) -> Fault:
        """429 rate_limit_exceeded with ``Retry-After`` (and ``retry-after-ms`` when given)."""
        return cls("rate_limit", 429, retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def status(
        cls,
        code: int = 500,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> Fault:
        """Any status with a body like real servers send (502 as an HTML page, as proxies do)."""
        return cls("status", code, message, retry_after=retry_after, should_retry=should_retry)

    @classmethod
    def quota(cls) -> Fault:
        """429 insufficient_quota: no retry can fix it."""
        return cls("quota", 429)

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls("unauthorized", 401)

    @classmethod
    def bad_request(cls, message: str = "Invalid value for 'voice'.", param: str | None = None) -> Fault:
        return cls("bad_request", 400, message, param=param)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the socket without a byte of answer."""
        return cls("drop", 0)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (meant to be past the client's timeout), then answer normally."""
        return cls("slow", 200, seconds=seconds)

    @classmethod
    def json_200(cls, message: str = "upstream provider error: quota exceeded") -> Fault:
        """Status 200 with a JSON error body, as some relays answer failures."""
        return cls("json_200", 200, message)

    @classmethod
    def empty_200(cls) -> Fault:
        return cls("empty_200", 200)

    @classmethod
    def garbage_200(cls) -> Fault:
        """Status 200, Content-Type audio/mpeg, and bytes that are not audio."""
        return cls("garbage_200", 200)

    @classmethod
    def bad_audio_200(cls) -> Fault:
        """Status 200 and bytes that start as valid MP3 frames, then turn to garbage: only reading every frame
        tells it from audio."""
        return cls("bad_audio_200", 200)

    @classmethod
    def wrong_format(cls, fmt: str = "wav") -> Fault:
        """Status 200 and real audio in ``fmt`` (one of SERVED_FORMATS) whatever format was asked for, labelled
        as what it is, as relays that ignore ``response_format`` answer."""
        return cls("wrong_format", 200, fmt)

    @classmethod
    def drop_sentence(cls) -> Fault:
        """Status 200 and real audio of the input less one sentence (see ``without_a_sentence``: chosen by a seed
        from the input among its sentences of 10 words or more), as speech models sometimes skip one: only a
        transcript of the answer (``/audio/transcriptions`` here) tells."""
        return cls("drop_sentence", 200)

    @classmethod
    def truncated_200(cls) -> Fault:
        """Status 200 and MP3 cut off in the middle of a frame, as a stream that broke off would be."""
        return cls("truncated_200", 200)


rate_limit = Fault.rate_limit
status = Fault.status
quota = Fault.quota
unauthorized = Fault.unauthorized
bad_request = Fault.bad_request
drop = Fault.drop
slow = Fault.slow
json_200 = Fault.json_200
empty_200 = Fault.empty_200
garbage_200 = Fault.garbage_200
bad_audio_200 = Fault.bad_audio_200
truncated_200 = Fault.truncated_200
wrong_format = Fault.wrong_format
drop_sentence = Fault.drop_sentence


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it. ``status`` is None while in flight and for a dropped connection."""

    time: float  # time.monotonic() at arrival
    path: str
    body: dict[str, Any] | None
    status: int | None
    fault: str | None
    input: str | None
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # extra seconds before answering (a slow fault)


_DROP = _Answer(0)


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> _Answer:
    payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _Answer(status, json.dumps(payload).encode())


# --- audio -----------------------------------------------------------------------------------------------


@functools.cache
def _tone() -> tuple[bytes, bytes]:
    """(PCM, MP3) of a few seconds of a quiet 200 Hz tone at 24 kHz mono; encoded once per process."""
    samples = 200 * 576  # 4.8 s, a whole number of frames
    wave_ = array.array("h", (int(1200 * math.sin(2 * math.pi * 200 * i / RATE)) for i in range(samples)))
    pcm = wave_.tobytes()
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1",
           "-i", "pipe:0", "-ar", str(RATE), "-ac", "1", "-c:a", "libmp3lame", "-b:a", "128k",
           "-reservoir", "0", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1"]  # fmt: skip
    proc = subprocess.run(cmd, input=pcm, capture_output=True, check=False)
    mp3 = proc.stdout
    if proc.returncode != 0 or not mp3 or len(mp3) % FRAME_BYTES or mp3[0] != 0xFF:
        raise RuntimeError(f"fake server could not encode its tone: {proc.stderr.decode(errors='replace')[:300]}")
    return pcm, mp3


def _repeat(buffer: bytes, size: int) -> bytes:
    return (buffer * (size // len(buffer) + 1))[:size]


def audio_for(text: str, ms_per_char: float, speed: float = 1.0, fmt: str = "mp3") -> bytes:
    """The answer for ``text``: about ``len(text) * ms_per_char / speed`` ms of tone in ``fmt``."""
    pcm, mp3 = _tone()
    ms = len(text) * ms_per_char / speed
    frames = max(MIN_FRAMES, round(ms / FRAME_MS))
    if fmt == "mp3":
        return _repeat(mp3, frames * FRAME_BYTES)
    raw = _repeat(pcm, frames * 576 * 2)
    return raw if fmt == "pcm" else _wav(raw)


# --- lies: valid audio that does not say its text (issue 17's verification) ------------------------------
# A 200 with real audio of the wrong length: cut short, holding a silence, or running on. Each is injected into
# a seeded share of the texts, and only for their first ``tries`` requests, so a fresh request is answered
# truly. Which texts lie depends on the text and the seed alone, never on the order requests arrive in.

LIES = ("cut_short", "silence_middle", "run_on")
SILENCE_S = 4.0  # inserted by silence_middle


@dataclass(frozen=True)
class Lie:
    kind: str  # one of LIES
    rate: float  # the share of texts it hits (0..1)
    tries: int = 1  # requests of each such text that get it (then the truth)
    seed: int = 0
    only: str | None = None  # this text alone lies (whatever the rate)

    def hits(self, text: str) -> bool:
        if self.only is not None:
            return text == self.only
        digest = hashlib.sha256(f"{self.seed}:{self.kind}:{text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


@functools.cache
def _silent_frames() -> bytes:
    """A run of digital silence as MP3 frames like the tone's (384 bytes, 24 ms, each decodable alone)."""
    samples = 200 * 576
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1",
           "-i", "pipe:0", "-ar", str(RATE), "-ac", "1", "-c:a", "libmp3lame", "-b:a", "128k",
           "-reservoir", "0", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1"]  # fmt: skip
    proc = subprocess.run(cmd, input=bytes(2 * samples), capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout or len(proc.stdout) % FRAME_BYTES:
        raise RuntimeError(f"fake server could not encode silence: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout


def lying_audio(audio: bytes, kind: str, fmt: str) -> bytes:
    """``audio`` (an honest answer) turned into the lie ``kind``: the first half, 4 s of silence in the middle,
    or three times over. MP3 is cut and joined at frame boundaries (every frame decodes alone); PCM by sample."""
    if fmt == "mp3":
        unit, silence = FRAME_BYTES, _repeat(_silent_frames(), round(SILENCE_S * 1000 / FRAME_MS) * FRAME_BYTES)
        body, head = audio, b""
    elif fmt in ("pcm", "wav"):
        unit, silence = 2, bytes(2 * round(SILENCE_S * RATE))
        head, body = (audio[:44], audio[44:]) if fmt == "wav" else (b"", audio)
    else:
        raise ValueError(f"the fake server cannot lie in {fmt}")
    count = len(body) // unit
    if kind == "cut_short":
        body = body[: max(MIN_FRAMES if fmt == "mp3" else 1, count // 2) * unit]
    elif kind == "silence_middle":
        middle = count // 2 * unit
        body = body[:middle] + silence + body[middle:]
    elif kind == "run_on":
        body = body * 3
    else:
        raise ValueError(f"unknown lie {kind!r}")
    if fmt == "wav":
        return _wav(body)
    return head + body


def lying_words(text: str, kind: str) -> str:
    """What a lie really says, for the transcription route: the first half of the words, all of them (with a
    silence), or all of them three times."""
    words = text.split()
    if kind == "cut_short":  # by words, or by characters where none are spaced apart (Chinese)
        return " ".join(words[: len(words) // 2]) if len(words) > 1 else text[: max(1, len(text) // 2)]
    if kind == "run_on":
        return " ".join([text] * 3)
    return text


def _wav(raw: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(raw)
    return out.getvalue()


# --- the rate limit --------------------------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """``seconds`` the way OpenAI writes ``x-ratelimit-reset-*`` (Go's ``time.Duration.String``): ``6m0s``,
    ``1h2m3.5s``, ``59.5s``, ``1s``, ``250ms``, ``0s``; rounded up to the millisecond, so never early."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


@dataclass(frozen=True)
class Admission:
    """The bucket's verdict on one request: ``refused`` names the limit hit ("requests" or "tokens"),
    ``retry_after`` the seconds until it would pass, ``headers`` what every answer carries."""

    refused: str | None
    retry_after: float
    headers: tuple[tuple[str, str], ...]


class RateBucket:
    """A key's limit as OpenAI's limiter behaves, on a clock the caller may inject.

    A token bucket of ``burst`` requests refilled at ``rpm`` per minute, and optionally one of ``tpm`` tokens
    (a request costs ``ceil(characters / chars_per_token)``; that bucket holds one second's worth, at least one
    request of the maximum input). OpenAI's headers describe a bucket of a minute's worth; the default burst is
    a stricter key, as if enforced per second: one second's worth, but at least 5, because a bucket of one
    refuses a perfectly paced client for a few milliseconds of network jitter, which no real limiter does.

    Refused requests count too, as OpenAI says they do ("unsuccessful requests contribute to your per-minute
    limit"): a refusal empties what was refilled towards the next request, so a client that retries faster
    than the refill never gets through. ``remaining`` is the whole requests left and ``reset`` the time until
    the bucket is full again (OpenAI's meaning: ``12ms`` after one request of 5000 per minute). Thread-safe."""

    def __init__(
        self,
        rpm: float | None = None,
        *,
        burst: float | None = None,
        tpm: float | None = None,
        chars_per_token: float = 4.0,
        headers: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0) or (burst is not None and burst < 1):
            raise ValueError("rpm and tpm must be > 0 and burst >= 1")
        self.rpm, self.tpm, self.advertise, self._clock = rpm, tpm, headers, clock
        self.burst = burst if burst is not None else max(5.0, (rpm or 0.0) / 60.0)
        self.token_burst = max((tpm or 0.0) / 60.0, math.ceil(MAX_INPUT / chars_per_token))
        self.chars_per_token = chars_per_token
        self._lock = threading.Lock()
        self._requests = self.burst  # both buckets start full
        self._tokens = self.token_burst
        self._last = clock()

    def admit(self, text: str | None) -> Admission:
        """Take one request (and its tokens) from the buckets, or refuse it."""
        cost = max(1, math.ceil(len(text or "") / self.chars_per_token))
        with self._lock:
            now = self._clock()
            elapsed, self._last = max(0.0, now - self._last), max(now, self._last)
            if self.rpm is not None:
                self._requests = min(self.burst, self._requests + elapsed * self.rpm / 60.0)
            if self.tpm is not None:
                self._tokens = min(self.token_burst, self._tokens + elapsed * self.tpm / 60.0)
            refused, wait = None, 0.0
            if self.rpm is not None and self._requests < 1:
                self._requests = 0.0  # the refusal counts: the refill towards the next request starts over
                refused, wait = "requests", 60.0 / self.rpm
            elif self.tpm is not None and self._tokens < cost:
                refused, wait = "tokens", (cost - self._tokens) * 60.0 / self.tpm
            else:
                if self.rpm is not None:
                    self._requests -= 1
                if self.tpm is not None:
                    self._tokens -= cost
            return Admission(refused, wait, self._headers() if self.advertise else ())

    def _headers(self) -> tuple[tuple[str, str], ...]:
        headers: list[tuple[str, str]] = []
        for kind, limit, level, capacity in (
            ("requests", self.rpm, self._requests, self.burst),
            ("tokens", self.tpm, self._tokens, self.token_burst),
        ):
            if limit is not None:
                headers += [
                    (f"x-ratelimit-limit-{kind}", str(int(limit))),
                    (f"x-ratelimit-remaining-{kind}", str(max(0, math.floor(level)))),
                    (f"x-ratelimit-reset-{kind}", go_duration((capacity - level) * 60.0 / limit)),
                ]
        return tuple(headers)


@dataclass(frozen=True)
class ServerStats:
    """What the benchmark reads: every request, those answered with audio, the most at once, and the 429s
    rate_limit_exceeded sent (by the bucket or an injected fault)."""

    requests: int
    served: int
    max_in_flight: int
    rate_limited: int


# --- the server ------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 drops SYNs when 64 clients connect at once
    owner: FakeSpeechServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a run abandoning its requests) is normal here, not a server bug:
        # the stdlib would print a traceback to stderr, where tests read the program's own messages.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API: the client's pool is exercised
    timeout = 60  # idle keep-alive connections end eventually
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # quiet: tests and the benchmark read requests from FakeSpeechServer.requests

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path
        body: dict[str, Any] | None = None
        try:
            parsed = json.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        except ValueError:
            pass
        if path == TRANSCRIPTIONS:
            body = parse_multipart(raw, self.headers.get("Content-Type", ""))
        text = body.get("input") if body is not None and isinstance(body.get("input"), str) else None
        slot = owner._arrive(Recorded(arrived, path, body, None, None, text, method, dict(self.headers.items())))
        settled = False
        try:
            answer, fault = owner._decide(method, path, self.headers.get("Authorization"), raw, body)
            if answer is not _DROP:
                owner._stopping.wait(owner.latency + answer.delay)
            # Recorded before the first byte goes out, so a client that has its answer also sees it here.
            owner._settle(slot, None if answer is _DROP else answer.status, fault)
            settled = True
            if answer is _DROP:
                self.close_connection = True
            else:
                self._write(answer)
        finally:
            if not settled:  # a bug in the fake itself: keep the record and the in-flight count honest
                owner._settle(slot, None, "error")

    def _write(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timed out) before the answer


class FakeSpeechServer:
    """See the module docstring. A context manager; ``start()``/``close()`` for explicit control."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        latency: float = 0.0,
        ms_per_char: float = 50.0,
        host: str = "127.0.0.1",
        port: int = 0,
        rpm: float | None = None,
        burst: float | None = None,
        tpm: float | None = None,
        rate_headers: bool = True,
        clock: Callable[[], float] = time.monotonic,
        transcript_seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.ms_per_char = ms_per_char
        # The key's rate limit (None: unlimited); ``clock`` drives only this bucket.
        self.bucket: RateBucket | None = None
        if rpm is not None or tpm is not None:
            self.bucket = RateBucket(rpm, burst=burst, tpm=tpm, headers=rate_headers, clock=clock)
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._queue: list[Fault] = []
        self._rules: list[list[Any]] = []  # [predicate, fault, remaining times or None]
        self._lies: list[Lie] = []
        self._tries: dict[str, int] = {}  # speech requests answered with audio so far, by text
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        _tone()  # encode before the first request, not during it
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None
        self.transcripts = Transcripts(self, seed=transcript_seed)
        bound_host, bound_port = self._httpd.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}/v1"

    # lifecycle

    def start(self) -> FakeSpeechServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on latency or a slow fault
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeSpeechServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # what tests use

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at one moment: the client's real concurrency."""
        with self._lock:
            return self._max_in_flight

    def inject(self, *faults: Fault) -> None:
        """The next ``len(faults)`` authorized speech requests get these faults, in order."""
        with self._lock:
            self._queue.extend(faults)

    def inject_transcription(self, *faults: Fault) -> None:
        """The next ``len(faults)`` authorized transcription requests get these faults, in order (speech
        requests take theirs from ``inject``)."""
        self.transcripts.inject(*faults)

    def inject_for(self, predicate: Callable[[dict[str, Any]], bool], fault: Fault, times: int | None = None) -> None:
        """Every speech request whose JSON body matches ``predicate`` gets ``fault`` (``times`` times, or
        always when None). Queued faults from ``inject`` come first."""
        with self._lock:
            self._rules.append([predicate, fault, times])

    def lie(self, kind: str, rate: float = 1.0, *, tries: int = 1, seed: int = 0, only: str | None = None) -> None:
        """From now on, a seeded ``rate`` of texts (or the text ``only``) get the lie ``kind`` (LIES) for their
        first ``tries`` requests: valid audio that is cut short, holds 4 s of silence, or runs on three times.
        Recorded with the lie's name as the request's fault."""
        if kind not in LIES:
            raise ValueError(f"unknown lie {kind!r} (known: {', '.join(LIES)})")
        with self._lock:
            self._lies.append(Lie(kind, rate, tries, seed, only))

    def lies_told(self) -> dict[str, int]:
        """How many answers told each lie so far."""
        counts = dict.fromkeys(LIES, 0)
        for r in self.requests:
            if r.fault in counts:
                counts[r.fault] += 1
        return counts

    def _lie_for(self, text: str) -> str | None:
        """The lie this answer for ``text`` tells, if any; counts the text's tries."""
        with self._lock:
            tried = self._tries.get(text, 0)
            self._tries[text] = tried + 1
            return next((lie.kind for lie in self._lies if tried < lie.tries and lie.hits(text)), None)

    def served_inputs(self) -> list[str]:
        """Inputs of the requests answered 200 with audio, without a fault (a slow answer arrives after the
        client gave up), in arrival order."""
        return [r.input for r in self.requests if r.status == 200 and r.fault is None and r.input is not None]

    def stats(self) -> ServerStats:
        requests = self.requests
        limited = sum(1 for r in requests if r.status == 429 and r.fault in ("rate_limit", "rpm", "tpm"))
        return ServerStats(len(requests), len(self.served_inputs()), self.max_in_flight, limited)

    def clear(self) -> None:
        """Forget recorded requests and pending faults (the audio, settings and rate bucket stay)."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._rules.clear()
            self._lies.clear()
            self._tries.clear()
            self.transcripts.clear()
            self._max_in_flight = self._in_flight

    # handler side

    def _arrive(self, record: Recorded) -> int:
        with self._lock:
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return len(self._requests) - 1

    def _settle(self, slot: int, status: int | None, fault: str | None) -> None:
        with self._lock:
            self._in_flight -= 1
            if slot < len(self._requests):  # clear() may have emptied the list meanwhile
                old = self._requests[slot]
                # A fault that still answered audio (slow) keeps its name, so served_inputs skips it.
                self._requests[slot] = Recorded(
                    old.time, old.path, old.body, status, fault, old.input, old.method, old.headers
                )

    def _next_fault(self, body: dict[str, Any] | None) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            if body is None:
                return None
            for rule in self._rules:
                predicate, fault, remaining = rule
                if remaining is not None and remaining <= 0:
                    continue
                try:
                    matched = bool(predicate(body))
                except Exception:  # a predicate that cannot read this body does not match it
                    matched = False
                if matched:
                    if remaining is not None:
                        rule[2] = remaining - 1
                    return fault
            return None

    def _decide(
        self, method: str, path: str, authorization: str | None, raw: bytes, body: dict[str, Any] | None
    ) -> tuple[_Answer, str | None]:
        known = (method, path) in (("POST", SPEECH), ("GET", MODELS), ("POST", TRANSCRIPTIONS))
        if not known:
            return _error(404, f"Invalid URL ({method} {path})", "invalid_request_error"), None
        if not authorization:
            message = "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
            return _error(401, message, "invalid_request_error"), None
        if authorization != f"Bearer {self.api_key}":
            given = authorization.removeprefix("Bearer ").strip()
            masked = given[:3] + "*" * 4 + given[-4:] if len(given) > 8 else "****"
            message = f"Incorrect API key provided: {masked}. You can find your API key at the dashboard."
            return _error(401, message, "invalid_request_error", "invalid_api_key"), None
        if path == MODELS:
            models = [{"id": m, "object": "model", "owned_by": "system"} for m in MODEL_IDS]
            return _Answer(200, json.dumps({"object": "list", "data": models}).encode()), None
        if path == TRANSCRIPTIONS:
            return self.transcripts.answer(body)
        if self.bucket is None:
            return self._speech(raw, body)
        admission = self.bucket.admit(
            body.get("input") if body is not None and isinstance(body.get("input"), str) else None
        )
        if admission.refused is not None:
            return self._refused(admission, body), "rpm" if admission.refused == "requests" else "tpm"
        answer, fault = self._speech(raw, body)
        if answer is not _DROP:
            answer = replace(answer, headers=answer.headers + admission.headers)
        return answer, fault

    def _refused(self, admission: Admission, body: dict[str, Any] | None) -> _Answer:
        # OpenAI's words: "Rate limit reached for tts-1 in organization org-... on requests per min (RPM):
        # Limit 3, Used 3, Requested 1. Please try again in 20s." with type "requests" or "tokens".
        assert self.bucket is not None and admission.refused is not None
        kind, wait = admission.refused, admission.retry_after
        model = body.get("model") if body is not None and isinstance(body.get("model"), str) else "requests"
        limit = self.bucket.rpm if kind == "requests" else self.bucket.tpm
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        message = f"Rate limit reached for {model} on {unit}: Limit {int(limit or 0)}. "
        message += f"Please try again in {go_duration(wait)}."
        answer = _error(429, message, kind, "rate_limit_exceeded")
        retry = (("retry-after-ms", str(math.ceil(wait * 1000))), ("retry-after", str(math.ceil(wait))))
        return replace(answer, headers=retry + admission.headers)

    def _speech(self, raw: bytes, body: dict[str, Any] | None) -> tuple[_Answer, str | None]:
        """An authorized speech request past the rate limit: injected faults, validation, then audio."""
        fault = self._next_fault(body)
        if fault is not None and fault.kind not in ("slow", "wrong_format", "drop_sentence"):
            return self._faulty(fault), fault.kind
        problem = _validate(raw, body)
        if problem is not None:
            return problem, fault.kind if fault else None
        assert body is not None
        fmt = fault.message if fault is not None and fault.kind == "wrong_format" else body.get("response_format")
        fmt = fmt or "mp3"
        spoken = without_a_sentence(body["input"]) if fault is not None and fault.kind == "drop_sentence" else None
        spoken = spoken if spoken is not None else body["input"]
        audio = audio_for(spoken, self.ms_per_char, float(body.get("speed", 1.0)), fmt)
        lie = self._lie_for(body["input"]) if fault is None and self._lies else None
        if lie is not None:  # the lie is made from the plain audio, and heard for what it really says
            audio, spoken = lying_audio(audio, lie, fmt), lying_words(spoken, lie)
        audio = self.transcripts.remember(audio, spoken, fmt)
        content_type = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm"}[fmt]
        delay = fault.seconds if fault is not None else 0.0
        if lie is not None:
            return _Answer(200, audio, content_type), lie
        return _Answer(200, audio, content_type, delay=delay), fault.kind if fault else None

    @staticmethod
    def _faulty(fault: Fault) -> _Answer:
        headers: list[tuple[str, str]] = []
        if fault.retry_after is not None:
            headers.append(("Retry-After", f"{fault.retry_after:g}"))
        if fault.retry_after_ms is not None:
            headers.append(("retry-after-ms", f"{fault.retry_after_ms:g}"))
        if fault.should_retry is not None:
            headers.append(("x-should-retry", "true" if fault.should_retry else "false"))
        kind = fault.kind
        if kind == "drop":
            return _DROP
        if kind == "rate_limit":
            message = "Rate limit reached for requests per min (RPM). Please try again later."
            answer = _error(429, message, "requests", "rate_limit_exceeded")
        elif kind == "quota":
            message = "You exceeded your current quota, please check your plan and billing details."
            answer = _error(429, message, "insufficient_quota", "insufficient_quota")
        elif kind == "unauthorized":
            answer = _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        elif kind == "bad_request":
            answer = _error(400, fault.message or "Bad request", "invalid_request_error", None, fault.param)
        elif kind == "json_200":
            answer = _error(200, fault.message or "error", "upstream_error")
        elif kind == "empty_200":
            answer = _Answer(200, b"", "audio/mpeg")
        elif kind == "garbage_200":
            answer = _Answer(200, b"<html><body>Service temporarily unavailable</body></html>", "audio/mpeg")
        elif kind == "bad_audio_200":
            junk = bytes((i * 7919 + 13) % 251 for i in range(5 * FRAME_BYTES))  # no MPEG frame header in it
            answer = _Answer(200, _tone()[1][: 3 * FRAME_BYTES] + junk, "audio/mpeg")
        elif kind == "truncated_200":
            answer = _Answer(200, _tone()[1][: 20 * FRAME_BYTES + FRAME_BYTES // 2], "audio/mpeg")
        elif fault.code == 502:
            page = f"<html><head><title>502 Bad Gateway</title></head><body>{fault.message or ''}</body></html>"
            answer = _Answer(502, page.encode(), "text/html")
        else:
            message = fault.message or {
                500: "The server had an error while processing your request. Sorry about that!",
                503: "The engine is currently overloaded, please try again later.",
            }.get(fault.code, f"Error {fault.code}")
            answer = _error(fault.code, message, "server_error" if fault.code >= 500 else "invalid_request_error")
        return _Answer(answer.status, answer.body, answer.content_type, tuple(headers))


# --- transcription ---------------------------------------------------------------------------------------
# What a part really says. Speech answers are cut from one tone, so two texts of one length would answer the
# same bytes: each MP3 answer carries an ID3v2 tag naming what it spoke (the pipeline skips tags, as it must
# for real servers' parts), and the server keeps sha256(answer) -> spoken text.

TRANSCRIBE_MODELS = ("gpt-4o-mini-transcribe", "gpt-4o-transcribe", "whisper-1")
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’»)\]]*\s+|(?<=[。！？])[”’」』）]*\s*")
_FILLERS = ("the", "a", "and", "uh", "so")
_HAN_NOISE = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年"


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence's end (Latin ``.!?…`` before a space, CJK ``。！？``), ends kept."""
    parts, at = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > at and text[at : match.end()].strip():
            parts.append(text[at : match.end()])
            at = match.end()
    if text[at:].strip():
        parts.append(text[at:])
    return parts


# A sentence left out is chosen among those of at least this many words (CJK: characters), when the input has
# one: shorter ones are not told from a recogniser's noise by any threshold (bench/transcript_threshold.py).
DROP_MIN_TOKENS = 10


def without_a_sentence(text: str) -> str:
    """``text`` less one of its sentences, chosen by a seed from the text (reproducible) among those of
    ``DROP_MIN_TOKENS`` or more (else the longest); a text of one sentence loses the second half of its words."""
    from pipeline.transcript import tokens

    parts = sentences(text)
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    if len(parts) >= 2:
        sizes = [len(tokens(part, language=None)) for part in parts]
        long = [i for i, size in enumerate(sizes) if size >= DROP_MIN_TOKENS]
        del parts[rng.choice(long) if long else max(range(len(parts)), key=sizes.__getitem__)]
        return "".join(parts).strip()
    words = text.split()
    if len(words) >= 2:
        return " ".join(words[: len(words) // 2])
    return text[: max(1, len(text) // 2)]


def _tag(audio: bytes, digest: str) -> bytes:
    """``audio`` behind an ID3v2.3 tag holding one TXXX frame ("fakeserver", ``digest``)."""
    data = b"\x00fakeserver\x00" + digest.encode()
    frame = b"TXXX" + len(data).to_bytes(4, "big") + b"\x00\x00" + data
    size = len(frame)
    syncsafe = bytes(((size >> shift) & 0x7F) for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frame + audio


def noisy(
    text: str,
    rng: random.Random,
    *,
    substitute: float = 0.03,
    delete: float = 0.005,
    insert: float = 0.005,
) -> str:
    """``text`` as a good recogniser writes it: a wrong letter in ``substitute`` of the words (a wrong character
    for CJK), ``delete`` of them left out and ``insert`` extra ones; punctuation dropped and case changed here
    and there, curly apostrophes straightened, numbers written as digits or words."""
    lower = rng.random() < 0.3  # some recognisers write everything lower case
    out: list[str] = []
    for word in re.findall(r"\S+", text):
        if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", word):  # CJK: character by character
            chars = []
            for ch in word:
                roll = rng.random()
                if not ch.isalnum() and rng.random() < 0.5:
                    continue
                if roll < delete:
                    continue
                chars.append(rng.choice(_HAN_NOISE) if roll < delete + substitute and ch.isalnum() else ch)
                if rng.random() < insert:
                    chars.append(rng.choice(_HAN_NOISE))
            out.append("".join(chars))
            continue
        roll = rng.random()
        if roll < delete:
            continue
        if rng.random() < 0.5:
            word = word.replace("\u2019", "'").replace("\u2018", "'")
        if rng.random() < 0.5:  # its punctuation dropped (a dash between words becomes a space)
            word = re.sub(r"[^\w'\s-]", "", re.sub(r"(?<=\w)[—–](?=\w)", " ", word))
        if re.fullmatch(r"\d+", word) and rng.random() < 0.5:
            from num2words import num2words

            year = len(word) == 4 and 1100 <= int(word) <= 2099 and not word.endswith("00")
            word = num2words(int(word), to="year" if year else "cardinal")
        elif word.lower() in _number_words() and rng.random() < 0.5:
            word = _number_words()[word.lower()]
        if delete <= roll < delete + substitute:
            letters = [i for i, ch in enumerate(word) if ch.isalpha()]
            if letters:
                i = rng.choice(letters)
                wrong = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != word[i].lower()])
                word = word[:i] + wrong + word[i + 1 :]
        if lower:
            word = word.lower()
        elif rng.random() < 0.02:
            word = word.swapcase()
        if word:
            out.append(word)
        if rng.random() < insert:
            out.append(rng.choice(_FILLERS))
    return " ".join(out)


@functools.cache
def _number_words() -> dict[str, str]:
    """``forty-two`` -> ``42``: a recogniser writes small numbers either way."""
    from num2words import num2words

    return {num2words(n): str(n) for n in range(2, 100)}


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """A ``multipart/form-data`` body's fields: text fields as strings, a file field as
    ``{"filename", "content_type", "data"}``; None when it is not multipart."""
    if "multipart/form-data" not in content_type.lower():
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        return None
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            fields[name] = {"filename": filename, "content_type": part.get_content_type(), "data": data}
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    return fields


class Transcripts:
    """The transcription side of a ``FakeSpeechServer``: what each answer spoke, and the noisy transcript.

    The noise of one transcript is seeded by (``seed``, the spoken text): the same part transcribed twice reads
    the same. ``substitute``/``delete``/``insert`` are the shares of words noised (see ``noisy``)."""

    def __init__(self, server: FakeSpeechServer, *, seed: int = 0) -> None:
        self._server = server
        self.seed = seed
        self.substitute, self.delete, self.insert = 0.03, 0.005, 0.005
        self._lock = threading.Lock()
        self._spoken: dict[str, str] = {}
        self._queue: list[Fault] = []

    def remember(self, audio: bytes, spoken: str, fmt: str) -> bytes:
        """The answer to send for ``audio`` of ``spoken``: tagged when MP3, and remembered by its hash."""
        if fmt == "mp3":
            audio = _tag(audio, hashlib.sha256(spoken.encode()).hexdigest()[:32])
        with self._lock:
            self._spoken[hashlib.sha256(audio).hexdigest()] = spoken
        return audio

    def spoken(self, audio: bytes) -> str | None:
        """What ``audio`` (an answer of this server) really says, or None for audio it never made."""
        with self._lock:
            return self._spoken.get(hashlib.sha256(audio).hexdigest())

    def transcript(self, spoken: str) -> str:
        rng = random.Random(f"{self.seed}:{spoken}")
        return noisy(spoken, rng, substitute=self.substitute, delete=self.delete, insert=self.insert)

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def answer(self, body: dict[str, Any] | None) -> tuple[_Answer, str | None]:
        """An authorized transcription request: injected faults, validation as OpenAI's, then the transcript."""
        with self._lock:
            fault = self._queue.pop(0) if self._queue else None
        if fault is not None and fault.kind != "slow":
            return self._server._faulty(fault), fault.kind

        def bad(message: str, param: str) -> tuple[_Answer, str | None]:
            return _error(400, message, "invalid_request_error", None, param), None

        if body is None:
            return bad("Expected a multipart/form-data body.", "file")
        upload = body.get("file")
        if not isinstance(upload, dict) or not upload["data"]:
            return bad("Missing required parameter: 'file'.", "file")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return bad("Missing required parameter: 'model'.", "model")
        if model not in TRANSCRIBE_MODELS:
            return bad(f"Invalid model {model!r} for transcription.", "model")
        fmt = body.get("response_format", "json")
        if fmt not in TRANSCRIPT_FORMATS:
            return bad(f"Invalid value for 'response_format': {fmt!r}.", "response_format")
        language = body.get("language")
        if language is not None and not re.fullmatch(r"[a-z]{2,3}", language):
            return bad(f"Invalid language {language!r}: expected ISO-639-1 (e.g. en).", "language")
        spoken = self.spoken(upload["data"])
        text = self.transcript(spoken) if spoken is not None else ""  # audio it never made: nothing heard
        delay = fault.seconds if fault is not None else 0.0
        if fmt == "text":
            return _Answer(200, text.encode(), "text/plain; charset=utf-8", delay=delay), None
        payload: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            payload.update(task="transcribe", language=language or "english", segments=[])
        body_out = json.dumps(payload, ensure_ascii=False).encode()
        return _Answer(200, body_out, delay=delay), fault.kind if fault else None


def _validate(raw: bytes, body: dict[str, Any] | None) -> _Answer | None:
    """None when the speech request is valid, else the 400 the real API would send."""

    def bad(message: str, param: str | None = None, code: str | None = None) -> _Answer:
        return _error(400, message, "invalid_request_error", code, param)

    if body is None:
        return bad("We could not parse the JSON body of your request: expected a JSON object.")
    for name, value in body.items():
        if value is None:
            return bad(f"Invalid type for '{name}': expected a value, but got null instead.", name, "invalid_type")
        if name not in FIELDS:
            return bad(f"Unrecognized request argument supplied: {name}", name)
    for name in ("model", "voice", "input"):
        value = body.get(name)
        if name not in body:
            return bad(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        if not isinstance(value, str) or not value.strip():
            return bad(f"Invalid value for '{name}': expected a non-empty string.", name, "invalid_value")
    if len(body["input"]) > MAX_INPUT:
        message = f"Invalid 'input': string too long. Expected a maximum length of {MAX_INPUT}."
        return bad(message, "input", "string_above_max_length")
    if "instructions" in body and not isinstance(body["instructions"], str):
        return bad("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
    if "speed" in body:
        speed = body["speed"]
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return bad(f"Invalid 'speed': {speed!r}. Expected a number from 0.25 to 4.0.", "speed")
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        return bad(
            f"Invalid value for 'response_format': {fmt!r}. Supported: {', '.join(FORMATS)}.",
            "response_format",
        )
    if fmt not in SERVED_FORMATS:
        return bad(f"This fake server only produces {', '.join(SERVED_FORMATS)}.", "response_format")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeserver", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--ms-per-char", type=float, default=50.0, help="audio per input character")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--rpm", type=float, help="the key's requests per minute (default: unlimited)")
    parser.add_argument("--burst", type=float, help="requests the bucket holds (default: 1 s worth, at least 5)")
    parser.add_argument("--tpm", type=float, help="the key's tokens per minute, at 4 characters a token")
    parser.add_argument("--no-rate-headers", action="store_true", help="do not advertise the limit in headers")
    parser.add_argument(
        "--lie", action="append", default=[], metavar="KIND:RATE[:TRIES]", help=f"tell a lie ({', '.join(LIES)})"
    )
    args = parser.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = FakeSpeechServer(
        args.api_key, latency=args.latency, ms_per_char=args.ms_per_char, host=args.host, port=args.port,
        rpm=args.rpm, burst=args.burst, tpm=args.tpm, rate_headers=not args.no_rate_headers,
    ).start()  # fmt: skip
    for spec in args.lie:
        kind, rate, *tries = spec.split(":")
        server.lie(kind, float(rate), tries=int(tries[0]) if tries else 1)
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # The benchmark parses this line: new fields go after "in flight".
        stats = server.stats()
        print(f"fakeserver: {stats.requests} requests, {stats.served} served, max {stats.max_in_flight} in flight, "
              f"{stats.rate_limited} rate-limited", file=sys.stderr)  # fmt: skip
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
