"""The OpenAI-compatible speech client: ``POST {base_url}/audio/speech`` with the official SDK's retry policy.

What is retried, and how long to wait, follows ``openai-python`` (``_base_client.py``):

- retried: timeouts, connection errors (refused, DNS, dropped), HTTP 408, 409, 429 and 5xx, and a 200 whose
  body is not audio (JSON error, empty, garbage: some relays answer errors with status 200);
- the server may force the decision with ``x-should-retry: true|false``;
- the wait is the server's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) when it is finite and
  lies in (0, 120] seconds, else ``0.5 * 2**n`` seconds capped at 8, less up to 25 % jitter;
- a ``retry-after`` over 120 s is not retried at all, whatever the status or ``x-should-retry`` says: the
  server wants nobody back for longer than a run should sit waiting. It stops the run (``KeyResting``) with
  one line saying when the server asked to be tried again.

That is openai-python 3.3.1 (``src/openai/_base_client.py`` ``_calculate_retry_timeout`` and ``_should_retry``,
``MAX_RETRY_AFTER_DELAY = 2 * 60`` in ``_constants.py``; the rule came with commit 7fa79464 "honor Retry-After
delays up to two minutes", read at e43b4224), and its test table is ours (``tests/test_openai_http.py``).

Failures no retry can fix raise a ``FatalAPIError`` at once with the server's own message, typed by what it
stops: ``AuthError`` (401, 403) and ``QuotaError`` (a 429 whose code is ``insufficient_quota``) the whole run,
``BadRequestError`` (400, 404, 422, a redirect) the book; so a run never pays for a thousand identical errors.
Every error carries the number of attempts made. The API key goes in one header and nowhere else: every
message is scrubbed of it.

A 200 of real audio in another format than the one asked for (a relay that ignores ``response_format`` and
answers WAV) is never retried: the same request gets the same answer. Where MP3 was asked, it is converted with
our ffmpeg (``media.to_mp3``), once per part; where another format was asked, the book stops at once naming
the format the server answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from pipeline import mp3
from pipeline.addresses import endpoint, is_this_machine, parse_base_url
from pipeline.errors import (
    AudioError,
    AuthError,
    BadRequestError,
    KeyResting,
    QuotaError,
    RateLimited,
    RetryableError,
    SynthesisError,
    UsageError,
)
from pipeline.limits import MAX_RETRY_AFTER, Governor, RateLimitInfo, parse_retry_after
from pipeline.models import BackendOptions, SpeechResult, VoiceSpec
from pipeline.tts.base import OPENAI_VOICES, Backend, VoiceInfo

log = logging.getLogger("audiobook")  # one logger: the CLI formats it for terminals and cron

INITIAL_RETRY_DELAY = 0.5  # seconds before the first retry when the server names no delay
MAX_RETRY_DELAY = 8.0

RETRYABLE_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
FATAL_STATUSES = frozenset({400, 401, 403, 404, 422})
_HINTS = {
    403: "the key may lack access to this model, project or region",
    404: "check base_url (it must end where /audio/speech is served, often /v1) and the model name",
}
_QUOTA_HINT = "add credit to the account or use another key"
SHARD_CONNECTIONS = 8  # connections per httpx client; see OpenAISpeech._open
# A request refused by the rate limit this many times is given up (and counts as failed): a limit that never
# lets it through is not one that pacing can meet.
MAX_RATE_LIMITED = 30
AUTH_STATUSES = frozenset({401, 403})
_MAX_MESSAGE = 300  # characters of a server message worth quoting on one line


# --- pure policy functions -------------------------------------------------------------------------------


def backoff_delay(retries_done: int, rand: float) -> float:
    """Exponential backoff for the retry after ``retries_done`` earlier retries; ``rand`` in [0, 1) shaves
    off up to 25 % so many workers that failed together do not retry in lockstep."""
    base = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_done, 32), MAX_RETRY_DELAY)
    return max(0.0, base * (1.0 - 0.25 * rand))


def retry_wait(retries_done: int, retry_after: float | None, rand: float) -> float:
    """The pause before the next attempt: the server's delay when it is finite and in (0, 120] s, else our
    backoff (the SDK's ``_calculate_retry_timeout``)."""
    if retry_after is not None and math.isfinite(retry_after) and 0 < retry_after <= MAX_RETRY_AFTER:
        return retry_after
    return backoff_delay(retries_done, rand)


def too_long(retry_after: float | None) -> bool:
    """Whether the server's delay is one not to retry after at all (the SDK's ``_should_retry``: a finite
    delay over 120 s; zero, negative, infinite or unparseable ones fall back to the backoff instead)."""
    return retry_after is not None and math.isfinite(retry_after) and retry_after > MAX_RETRY_AFTER


def _after(seconds: float) -> str:
    """``seconds`` from now as people read it: ``1 day 0 h (until 2026-12-08 18:20 UTC)``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    span = (f"{days} day{'s' if days > 1 else ''} {hours} h" if days else f"{hours} h {rest // 60} min"
            if hours else f"{rest // 60} min {rest % 60} s")  # fmt: skip
    try:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + seconds))
    except (OverflowError, OSError, ValueError):  # beyond what the platform's calendar holds
        return span
    return f"{span} (until {until})"


def server_message(body: bytes, content_type: str = "") -> tuple[str | None, frozenset[str]]:
    """``(message, codes)`` from an error body in any of the shapes servers use.

    OpenAI's ``{"error": {"message", "type", "code", "param"}}``, ``{"error": "text"}``, ``{"message": ...}``,
    FastAPI's ``{"detail": "text" | [{"msg": ...}]}``, or plain text. ``codes`` holds the error's ``code`` and
    ``type`` when given (to tell ``insufficient_quota`` from a plain rate limit)."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return None, frozenset()
    data: Any = None
    if "json" in content_type or text[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = _as_text(error.get("message")) or _as_text(error.get("type")) or _as_text(error)
            param = error.get("param")
            if message and isinstance(param, str) and param:
                message = f"{message} (param: {param})"
            return message, _codes(error)
        if isinstance(error, str) and error:
            return _one_line(error), _codes(data)
        for key in ("message", "detail", "msg"):
            if data.get(key):
                return _as_text(data[key]), _codes(data)
        return _one_line(text), _codes(data)
    if data is not None:
        return _as_text(data), frozenset()
    if text.lower().startswith(("<!doctype", "<html")):
        return _html_title(text), frozenset()
    return _one_line(text), frozenset()


def _codes(error: dict[str, Any]) -> frozenset[str]:
    return frozenset(str(error[k]) for k in ("code", "type") if isinstance(error.get(k), str | int))


def _as_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return _one_line(value)
    if isinstance(value, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}, ...]
        parts = [_as_text(v.get("msg") if isinstance(v, dict) else v) for v in value]
        return _one_line("; ".join(p for p in parts if p)) or None
    return _one_line(json.dumps(value, ensure_ascii=False))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def _html_title(html: str) -> str:
    lower = html.lower()
    start, end = lower.find("<title>"), lower.find("</title>")
    if 0 <= start < end:
        return _one_line(html[start + 7 : end]) or "an HTML page"
    return "an HTML page"


def audio_problem(fmt: str | None, body: bytes) -> str | None:
    """Why a 200 body is not usable audio of the format asked for, or None when it is. MP3 is read frame by
    frame (well under a millisecond for a part): a body that starts like audio but is garbage, or that a
    dropped connection cut short, is refused here, before it is cached, not found only at assembly."""
    fmt = (fmt or "mp3").lower()
    if fmt == "mp3":
        try:
            mp3.check_part(body)
        except mp3.NotAudio as exc:
            return str(exc)
        return None
    magic = {"wav": b"RIFF", "flac": b"fLaC", "opus": b"OggS"}.get(fmt)
    if magic is None or body.startswith(magic):  # aac and raw pcm have no reliable cheap magic
        return None
    return f"it does not start with {magic!r}"


def sniff(body: bytes) -> str | None:
    """The audio format a body is in, by its bytes: ``mp3``, ``wav``, ``flac``, ``opus`` (Ogg); None when it
    is none of these (garbage, or aac and raw pcm, which have no reliable cheap magic)."""
    if body[:4] == b"RIFF" and body[8:12] == b"WAVE":
        return "wav"
    if body[:4] == b"fLaC":
        return "flac"
    if body[:4] == b"OggS":
        return "opus"
    return "mp3" if audio_problem("mp3", body) is None else None


class _OtherFormat(Exception):
    """A 200 of audio in ``found``, not the format asked for: usable if it can be converted, never retried."""

    def __init__(self, found: str, body: bytes) -> None:
        super().__init__(found)
        self.found, self.body = found, body


# --- the client ----------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class ApiRequest(Generic[T]):
    """One request as every attempt sends it: where, what (httpx's ``json``, or ``files`` and ``data``), how a
    200 is read (``accept`` raises a SynthesisError for an answer not to keep), under which governor."""

    what: str  # "speech", "transcription": names it in messages
    url: httpx.URL
    headers: dict[str, str]
    body: dict[str, Any]
    accept: Callable[[httpx.Response], T]
    cost: int  # what the governor counts against a per-minute budget besides the request itself
    governor: Governor
    fmt: str | None = None  # the audio format asked for (speech), for an answer in another one


class _Tally:
    """What one segment's request cost: attempts sent (429s of the rate limit apart), and time held back."""

    def __init__(self) -> None:
        self.attempts = 0
        self.rate_limited = 0
        self.waited_s = 0.0

    def stamp(self, exc: SynthesisError) -> SynthesisError:
        exc.attempts, exc.rate_limited, exc.waited_s = self.attempts, self.rate_limited, round(self.waited_s, 3)
        return exc


class OpenAISpeech:
    """``Synthesizer`` for any server that speaks OpenAI's ``/audio/speech``. Safe to share between tasks."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        connections: int = 8,
        governor: Governor | None = None,
        key_env: str = "OPENAI_API_KEY",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = parse_base_url(base_url)  # the config's own check and normal form: no userinfo, query kept
        if max_retries < 0 or connections < 1:
            raise UsageError("max_retries must be >= 0 and connections >= 1")
        self._host = base.netloc
        self._where = base.where  # what messages and the identity name: no scheme, userinfo, key
        try:
            self._endpoint = httpx.URL(base.url("/audio/speech"))
        except httpx.InvalidURL as exc:  # what urlsplit lets through and httpx does not (a bad host name)
            raise UsageError(f"base_url {base_url!r} is not a URL: {exc}") from None
        self._api_key = api_key
        self._key_env = key_env  # where the key came from, for messages (never the key)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._max_retries = max_retries
        # The pool that calls us owns the limit on requests in flight; the connections follow from it.
        self._connections = connections
        self._sleep = sleep
        # Every attempt goes through the governor of this endpoint and key (shared by every synthesizer that
        # uses them, when the caller passes one): it paces requests to the key's limit and takes 429s.
        self.governor = governor or Governor(connections, sleep=sleep, clock=clock)
        self._transport = transport
        self._converting: str | None = None  # the format this server answers instead of MP3, once said
        self._clients: list[httpx.AsyncClient] = []  # the shards; see _open
        self._capacity: list[int] = []
        self._busy: list[int] = []

    def identity(self) -> str:
        return "openai:" + self._where

    def _open(self) -> None:
        # Created on first use so constructing a synthesizer (e.g. for --dry-run) opens nothing.
        #
        # httpcore's pool rescans all its connections, quadratically, on every request and release
        # (encode/httpcore#1035, encode/httpx#3215). Measured here: 64 connections in one client cost ~10 ms
        # of CPU per request, and synthesis efficiency fell to 0.1. So the connections are split over
        # clients of at most SHARD_CONNECTIONS each, and each request goes to the shard with the most free
        # connections. The caller's pool never has more than ``connections`` requests in flight, so no
        # request ever waits inside a shard.
        headers = {"User-Agent": "audiobook-pipeline"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        shards = 1 if self._transport is not None else -(-self._connections // SHARD_CONNECTIONS)
        self._capacity = [len(range(i, self._connections, shards)) for i in range(shards)]
        self._busy = [0] * shards
        ssl_context = httpx.create_ssl_context()  # loading the CA bundle takes ~40 ms: once, not per shard
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=self._connect_timeout),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                headers=headers,
                transport=self._transport,
                verify=ssl_context,
            )
            for size in self._capacity
        ]

    async def _post(self, url: httpx.URL, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
        if not self._clients:
            self._open()
        shard = max(range(len(self._clients)), key=lambda i: self._capacity[i] - self._busy[i])
        self._busy[shard] += 1
        try:
            return await self._clients[shard].post(url, headers=headers, **body)
        finally:
            self._busy[shard] -= 1

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    async def synthesize(self, text: str, spec: VoiceSpec) -> SpeechResult:
        payload: dict[str, Any] = {"model": spec.model, "input": text, "voice": spec.voice}
        # Only what is set: several relays answer 400 to "instructions": null.
        if spec.instructions:
            payload["instructions"] = spec.instructions
        if spec.speed is not None:
            payload["speed"] = spec.speed
        if spec.response_format is not None:
            payload["response_format"] = spec.response_format
        audio_type = "audio/mpeg" if (spec.response_format or "mp3") == "mp3" else "audio/*"
        headers = {"Accept": f"{audio_type}, application/json;q=0.5"}
        fmt = spec.response_format
        request = ApiRequest("speech", self._endpoint, headers, {"json": payload}, lambda r: self._check(r, fmt),
                           len(text), self.governor, fmt)  # fmt: skip
        audio, tally = await self.attempts(request)
        return SpeechResult(audio, tally.attempts, tally.rate_limited, round(tally.waited_s, 3))

    async def attempts(self, request: ApiRequest[T]) -> tuple[T, _Tally]:
        """``request`` sent until an answer is accepted, retried as the module docstring says."""
        tally = _Tally()
        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, RetryableError)),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    tally.attempts += 1
                    answer = await self._governed(request, tally)
        except RetryableError as exc:
            plural = "attempt" if tally.attempts == 1 else "attempts"
            error = RetryableError(
                f"{request.what} request failed after {tally.attempts} {plural}; last error: {exc}",
                status=exc.status,
                retry_after=exc.retry_after,
            )
            raise tally.stamp(error) from exc
        except SynthesisError as exc:
            raise tally.stamp(exc) from None
        return answer, tally

    async def _governed(self, request: ApiRequest[T], tally: _Tally) -> T:
        """One attempt, paced by the governor. A 429 that is a rate limit is not a failed attempt: the governor
        pauses and the request waits for its turn again (it is counted apart), until a real answer comes."""
        while True:
            async with request.governor.slot(request.cost) as slot:
                tally.waited_s += slot.waited_s
                response = await self._send(request)  # a transport error leaves the slot as failed
                info = RateLimitInfo.from_headers(response.headers)
                try:
                    answer = request.accept(response)
                except _OtherFormat as other:
                    slot.done(info)  # a real answer, paid for: the request went through
                    converted: Any = await self._converted(other, request.fmt or "mp3")
                    return converted  # only speech's accept raises _OtherFormat: T is bytes
                except RateLimited as exc:
                    slot.rate_limited(exc.retry_after, info)
                    tally.rate_limited += 1
                    if tally.rate_limited >= MAX_RATE_LIMITED:  # a failed segment, not one more retry
                        raise SynthesisError(
                            self._scrub(
                                f"{exc}; refused by the rate limit {tally.rate_limited} times for one request "
                                "(the key may be limited per day, or shared with something busy)"
                            ),
                            status=exc.status,
                        ) from None
                    continue
                except KeyResting as exc:
                    if exc.status == 429:  # counted as what it is, a refusal of the rate limit (not a retry)
                        slot.rate_limited(MAX_RETRY_AFTER, info)
                        tally.rate_limited += 1
                    else:
                        slot.failed(info)
                    raise
                except SynthesisError:
                    slot.failed(info)
                    raise
                slot.done(info)
                return answer

    async def _converted(self, other: _OtherFormat, asked: str) -> bytes:
        """An answer in another format than ``asked``: MP3 made from it, or the book stops (no retry changes
        what format a server answers)."""
        if asked != "mp3":
            raise BadRequestError(
                f"{self._where} answers {other.found} audio when {asked} is asked for; only MP3 is converted "
                f'here: leave response_format unset (MP3), or set response_format = "{other.found}"'
            )
        if self._converting != other.found:
            self._converting = other.found
            log.warning("%s answers %s audio when mp3 is asked for: each part is converted to MP3", self._where,
                        other.found)  # fmt: skip
        from pipeline import media  # pydub and ffmpeg only for a server that needs them

        try:
            return await asyncio.to_thread(media.to_mp3, other.body)
        except AudioError as exc:  # looked like audio, but is broken: another answer may be whole
            raise self._retryable(f"{self._where} answered {other.found} audio that {exc}") from None

    # One request: the response, or the right SynthesisError subclass with a scrubbed one-line message.
    async def _send(self, request: ApiRequest[Any]) -> httpx.Response:
        try:
            return await self._post(request.url, request.headers, request.body)
        except httpx.ConnectTimeout:
            raise self._retryable(
                f"the server at {self._host} could not be reached within {self._connect_timeout:g} s "
                "(connect timeout); check base_url and the network"
            ) from None
        except httpx.TimeoutException as exc:
            phase = type(exc).__name__.removesuffix("Timeout").lower() or "request"
            raise self._retryable(
                f"no answer from {self._where} within {self._timeout:g} s ({phase} timeout)"
            ) from None
        except httpx.ConnectError as exc:
            raise self._retryable(
                f"the server at {self._host} could not be reached ({exc or 'connect error'}); "
                "check base_url and that the server is running"
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise BadRequestError(self._scrub(f"cannot talk to {self._where}: {exc}")) from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # RemoteProtocolError, ReadError, WriteError...: the connection dropped mid-request.
            raise self._retryable(
                f"the connection to {self._host} failed before a full answer "
                f"({type(exc).__name__}: {exc or 'no detail'})"
            ) from None

    def _check(self, response: httpx.Response, fmt: str | None) -> bytes:
        status, body = response.status_code, response.content
        content_type = response.headers.get("content-type", "").lower()
        if status == 200:
            if not body:
                raise self._retryable(f"{self._where} answered 200 with an empty body instead of audio")
            if "json" in content_type or body.lstrip()[:1] == b"{":
                message, _ = server_message(body, content_type)
                raise self._retryable(
                    f"{self._where} answered 200 with JSON instead of audio: {message or 'no message'}"
                )
            # The bytes decide, not the label: relays mislabel audio (octet-stream, text/plain, text/html).
            problem = audio_problem(fmt, body)
            found = sniff(body) if problem is not None else None
            if found is not None and found != (fmt or "mp3"):
                raise _OtherFormat(found, body)
            if problem is not None:
                raise self._retryable(
                    f"{self._where} answered 200 with {len(body)} bytes that are not {fmt or 'mp3'} audio: "
                    f"{problem} (content-type {content_type or 'missing'}, starts with {body[:16]!r})"
                )
            return body
        self.refuse(response)

    def refuse(self, response: httpx.Response) -> NoReturn:
        """Raise the SynthesisError a non-200 answer means (retried, stops the book or the run...)."""
        status, body = response.status_code, response.content
        content_type = response.headers.get("content-type", "").lower()
        message, codes = server_message(body, content_type)
        retry_after = parse_retry_after(response.headers)
        reason = f"HTTP {status}" + (f" {response.reason_phrase}" if response.reason_phrase else "")
        detail = f"{self._where} answered {reason}: {message or 'no message'}"
        if status == 429 and "insufficient_quota" in codes:
            raise QuotaError(self._scrub(f"{detail} ({_QUOTA_HINT})"), status=status)
        if too_long(retry_after):
            assert retry_after is not None
            wait = f"{_after(retry_after)}, longer than the {MAX_RETRY_AFTER:g} s a retry waits"
            raise KeyResting(self._scrub(f"{detail}; it asks to be tried again in {wait}: run again then"),
                             status=status, retry_after=retry_after)  # fmt: skip
        if status == 429:
            raise RateLimited(self._scrub(detail), status=status, retry_after=retry_after)

        should_retry = response.headers.get("x-should-retry", "").strip().lower()
        if should_retry == "true":
            retryable = True
        elif should_retry == "false":
            retryable = False
        else:
            retryable = status in RETRYABLE_STATUSES or status >= 500
        if retryable:
            raise self._retryable(detail, status=status, retry_after=retry_after)
        hint = _HINTS.get(status)
        if status == 401:  # name the variable this client actually read, whatever the config called it
            hint = f"check the key in ${self._key_env}" if self._api_key else f"no key was sent: set ${self._key_env}"
        if status in FATAL_STATUSES:
            kind = AuthError if status in AUTH_STATUSES else BadRequestError
            raise kind(self._scrub(f"{detail} ({hint})" if hint else detail), status=status)
        if 300 <= status < 400:
            where_to = response.headers.get("location", "?")
            message = f"{detail}; redirected to {where_to}: set base_url to the final address"
            raise BadRequestError(self._scrub(message), status=status)
        # Anything else (413, 415, a 5xx the server marked final...) fails this segment, not the run.
        raise SynthesisError(self._scrub(detail), status=status)

    def _scrub(self, message: str) -> str:
        # Servers and relays sometimes echo the key they were given. Keys shorter than 4 characters are
        # placeholders for local servers ("x"), and scrubbing them would mangle every message.
        if len(self._api_key) < 4:
            return message
        return message.replace(self._api_key, "***")

    def _retryable(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> RetryableError:
        return RetryableError(self._scrub(message), status=status, retry_after=retry_after)

    # tenacity hooks --------------------------------------------------------------------------------------

    @staticmethod
    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, SynthesisError) else None
        return retry_wait(state.attempt_number - 1, retry_after, random.random())

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("attempt %d failed, retrying in %.1f s: %s", state.attempt_number, float(wait), exc)


# --- the backend -----------------------------------------------------------------------------------------

# Rough list prices in US dollars per million input characters, for the plan's estimate only.
# gpt-4o-mini-tts is billed by tokens; OpenAI quotes about $0.015 a minute, ~900 characters of English.
PRICE_PER_MILLION_CHARS = {"gpt-4o-mini-tts": 15.0, "tts-1": 15.0, "tts-1-hd": 30.0}
DEFAULT_PRICE = 15.0


def is_local_endpoint(base_url: str) -> bool:
    """Whether the endpoint is on this machine (loopback, or 0.0.0.0 and :: as a client reaches them)."""
    return is_this_machine(parse_base_url(base_url).host)


def _build(options: BackendOptions, connections: int, env: Mapping[str, str], governor: Governor) -> OpenAISpeech:
    key = options.api_key(env)
    if key is None and not is_local_endpoint(options.base_url):  # a server on this machine may need none
        raise UsageError(
            f"no API key: set the environment variable {options.api_key_env} "
            f"(or use --backend local for the offline voice)"
        )
    return OpenAISpeech(
        options.base_url,
        key or "",
        timeout=options.timeout,
        connect_timeout=options.connect_timeout,
        max_retries=options.max_retries,
        connections=connections,
        governor=governor,
        key_env=options.api_key_env,
    )


def _cost(options: BackendOptions, model: str, characters: int) -> float:
    price = options.price_per_million_chars
    if price is None:
        price = PRICE_PER_MILLION_CHARS.get(model, DEFAULT_PRICE)
    return characters * price / 1_000_000


def _voices() -> list[VoiceInfo]:
    return [
        VoiceInfo(name, "auto", "OpenAI voice (relays and local servers may offer others)") for name in OPENAI_VOICES
    ]


BACKEND = Backend(
    name="openai",
    build=_build,
    identity=lambda options: "openai:" + endpoint(options.base_url),
    describe=lambda options: endpoint(options.base_url),
    cost=_cost,
    voices=_voices,
)
