"""The rate governor: requests (and characters or tokens) per minute per endpoint and key, learned from headers.

A key is limited in requests per minute, sometimes in tokens per minute too. A fixed pool that only reacts to
429s sends everything at once, gets refused in a wave, and (obeying ``Retry-After`` to the millisecond) comes
back in the same wave; OpenAI also counts refused requests against the limit, so the wave never drains. The
governor instead releases requests at the allowed pace, before the server has to refuse anything::

    governor = Governor(concurrency=8, rpm=config.rpm)      # one per endpoint + key, shared by every book

    async def worker() -> None:                              # one of the pool's workers
        while (request := await queue.get()) is not None:
            async with governor.slot(len(request.text)) as slot:   # waits for the pace and a free place
                try:
                    answer = await client.attempt(request)         # ONE attempt, with its response headers
                except RateLimited as exc:                         # 429 rate_limit_exceeded (not insufficient_quota)
                    slot.rate_limited(exc.retry_after, exc.info)   # everyone pauses; concurrency halves
                    queue.put_nowait(request)                      # re-queued: not a retry of the segment
                    continue
                slot.done(answer.info)                             # learns x-ratelimit-*; concurrency regrows

Leaving the block without reporting (any other error, cancellation) counts as ``slot.failed()``.

How it decides (every figure is a constant below, with its reason):

- **Pacing.** Requests go out through a GCRA at 97 % of the known limit, with a burst of one second's worth
  (a limit per minute may be enforced over shorter periods; a smooth pace loses nothing, since a long run's
  throughput is the rate, not the burst). The limit is the lowest of: the configured ``rpm``,
  ``x-ratelimit-limit-requests``, and a cap learned from 429s. Without any of them nothing is paced: no
  waiting, and concurrency stays the pool's, once the first answer is in: until then (no configured,
  remembered or advertised limit) only ``FIRST_WAVE`` requests go, so a blind wave cannot empty a small
  bucket before its headers are read.
- **The server's bucket.** OpenAI's limiter is a token bucket holding a minute's worth: ``remaining`` is what
  is left, ``reset`` the time until it is full again (``12ms`` after one request of 5000 per minute). Each
  answer's headers set a mirror of that bucket (minus what was released since that request left), so a key
  shared with another program slows down before a 429. Tokens likewise, when the server sends ``-tokens``.
  ``remaining`` wins over ``reset`` when both are sent; an answer older than one already read is ignored.
- **Characters to tokens.** OpenAI charges a request against the token limit by "the estimated number of
  tokens based on the character count" and does not publish the formula. We count ``tokens_per_char`` = 1
  token per character: an upper bound for every script (English averages four characters per token, Chinese
  about one). The error cannot accumulate: each answer's ``remaining-tokens`` replaces the estimate, so only
  the requests in flight are estimated, and over-estimating them holds back a constant reserve, not a rate.
- **A 429.** Everyone pauses until ``retry-after`` (at most ``MAX_RETRY_AFTER``, two minutes: the client
  stops the run on a longer one); after it requests are released one
  pacing interval apart, not all at once. Concurrency halves (once per wave: refusals of requests sent before
  the last decrease do not count again) and grows by one after as many successes as are allowed in flight,
  never above the pool's concurrency, never below 1. When the server advertises no limit, the 429 also caps
  the rate at 70 % of the lowest of the configured limit, the previous cap and what was answered over the
  last minute; each success raises the cap by one request per minute (back where it was in about 18 s,
  whatever the rate) until the next 429. The caller re-queues the request. A key that answers nothing but
  429s for ``patience`` seconds makes ``acquire`` raise ``KeyResting``: the run stops, naming it.
- **Stopping.** After ``stop()`` (Ctrl-C, or the run stopping early) ``acquire`` raises ``GovernorStopped``:
  a request waiting in line, or refused by a 429, is not sent again; the requests in flight land.

**Shared by many processes** (``Governor(..., shared=RedisLimits(client, where))``, see
``pipeline.limits_redis``): workers on several machines speaking through one key keep one budget. The pacing
state of each limit is one number (GCRA's theoretical arrival time), so it lives in the store: the pace, the
configured characters per minute and the mirrors of the server's buckets are reserved there atomically, and
what one worker learns (the limits in the headers, the server's remaining and reset, a 429's pause) holds for
all. Concurrency (AIMD) and a cap learned from 429s stay per process: they measure what this process gets
through. Three differences from the process-local governor:

- *Reserve, then sleep.* The head of the line claims a slot in the store (which answers how long to wait)
  and sleeps until it; locally it would compute the delay, sleep and look again. A reservation not used (the
  waiter was cancelled, a 429 paused everyone meanwhile) is given back if nobody reserved after it, else it
  is lost: only the head of each process's line holds one, so at most one slot per process, the safe way.
- *Answers sync the shared mirrors* by how far the server's count differs from what the reservation expected,
  which carries every worker's later reservations along (the local governor replays its own log instead).
- *When the store fails* (unreachable, too slow, an error), the process paces alone at the whole key's rate
  for ``SHARED_RETRY_S``, with a warning, then asks again. Failing the requests instead would waste the ones
  in flight for a store the server does not need: the server still enforces its limit, and its 429s and
  headers (synced into the local mirrors) slow N lone workers down, as they would slow down one.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from pipeline.errors import KeyResting
from pipeline.files import atomic_write

RATE_MARGIN = 0.97  # pace at 97 % of a known limit: arrival jitter and rounding never reach the limit itself
BURST_SECONDS = 1.0  # burst = this many seconds' worth: safe if "per minute" is enforced per second
CPM_MIN_BURST = 4096.0  # characters: at least one request of OpenAI's maximum input goes out without waiting
# The longest server-named delay waited out, as openai-python has it since 3.3.x (``MAX_RETRY_AFTER_DELAY = 2 * 60``,
# commit 7fa79464 "honor Retry-After delays up to two minutes"; read at e43b4224, version 3.3.1): a longer one is
# not retried at all (its ``_should_retry``), so the client stops instead (``openai_http``) and no pause is longer.
MAX_RETRY_AFTER = 120.0
MAX_PAUSE = MAX_RETRY_AFTER
DEFAULT_PAUSE = 1.0  # a 429 that names no (usable) delay
CAP_DECREASE = 0.7  # a 429 with no known limit caps the rate at 70 % of what was answered (as botocore's adaptive mode)
CAP_STEP_RPM = 1.0  # ...and each success raises the cap by 1 per minute: ~18 s back to the old rate, at any rate
MIN_CAP_RPM = 1.0
MIN_SAMPLES = 4  # answers needed before a rate is measured
RATE_WINDOW = 60.0  # seconds over which achieved and answered rates are measured
LOG_SIZE = 4096  # releases remembered to replay after a header sync; older answers are too stale to sync from
SHARED_RETRY_S = 5.0  # after the shared store failed, pace this process alone this long before asking it again
SHARED_TIMEOUT_S = 1.0  # a call to the shared store slower than this counts as failed: it is one round trip
# Before anything tells the limit (configured, remembered, or read from an answer), this many requests go at
# once: a blind wave of 16 into a bucket of 5 had 11 refused. 4 fits the strictest buckets measured (5) and
# leaves a pool of 4 or fewer untouched; the first answer opens the rest (paced, when it named a limit).
FIRST_WAVE = 4
QUIET_S = 60.0  # nothing but 429s for this long is worth saying on the progress line
DEFAULT_PATIENCE_S = 600.0  # nothing but 429s for this long stops the run (config: rate_limit_patience)

log = logging.getLogger("audiobook")

Sleep = Callable[[float], Awaitable[None]]


class GovernorStopped(Exception):
    """``acquire`` after ``Governor.stop()``: the run is stopping, so the request is not sent (it is not a
    failure of the part: the next run makes it). Raised to requests waiting for their turn, and to a request
    refused with a 429 that would otherwise go back in line."""


# --- header parsing --------------------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The delay in seconds the server asks for, or None when it names none (or nothing parseable).

    ``retry-after-ms`` wins over ``retry-after``; the latter may be seconds (floats allowed, as the SDK does)
    or an HTTP date, measured from ``now`` (a Unix time; the current time by default). The result may be
    zero, negative or huge: deciding whether to honour it is ``retry_wait``'s job."""
    lookup = {name.lower(): value for name, value in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = lookup.get(name)
        if raw is None:
            continue
        try:
            return float(raw) * scale
        except ValueError:
            continue
    raw = lookup.get("retry-after")
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError, OSError):  # a year the calendar cannot hold, as the SDK
        return None
    return float(when) - (time.time() if now is None else now)


_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(h|ms|m|s|us|µs|μs|ns)", re.ASCII)  # ASCII: no other scripts' digits
_BARE_SECONDS = re.compile(_NUMBER, re.ASCII)
_UNITS = {"h": (0, 3600.0), "m": (1, 60.0), "s": (2, 1.0), "ms": (3, 1e-3), "us": (4, 1e-6), "µs": (4, 1e-6),
          "μs": (4, 1e-6), "ns": (5, 1e-9)}  # fmt: skip
_COUNT = re.compile(r"\d{1,18}", re.ASCII)


def parse_duration(text: str | None) -> float | None:
    """Seconds in a reset header, or None when it is missing or not a duration.

    OpenAI writes them as Go durations (``time.Duration.String``): ``6m0s``, ``1s``, ``250ms``, ``59.5s``,
    ``1h2m3.5s``, ``0s``. Units must come largest first, each once, as Go writes them (so ``1s1s`` or ``2m1h``
    are garbage). A bare non-negative number is seconds (Azure OpenAI sends ``0``)."""
    if text is None:
        return None
    text = text.strip()
    if _BARE_SECONDS.fullmatch(text):
        return _finite(float(text))
    total, pos, last_rank = 0.0, 0, -1
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            return None
        rank, scale = _UNITS[part.group(2)]
        if rank <= last_rank:
            return None
        total += float(part.group(1)) * scale
        pos, last_rank = part.end(), rank
    return _finite(total) if pos else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _count(text: str | None, *, minimum: int = 0) -> int | None:
    # Azure OpenAI sends -1 for a limit it does not know; anything not a plain count is unknown too.
    if text is None or not _COUNT.fullmatch(text.strip()):
        return None
    value = int(text)
    return value if value >= minimum else None


@dataclass(frozen=True)
class RateLimitInfo:
    """What one answer said about the key's limits; every field None when not said (or not parseable).

    ``reset_*`` are seconds until that bucket is full again; ``retry_after`` is ``parse_retry_after``'s reading
    of ``retry-after-ms`` / ``retry-after`` (may be zero, negative or huge: the governor decides)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
        """Read OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` and the retry-after pair
        (case-insensitive names; ``now`` is the Unix time an HTTP-date ``retry-after`` is measured from)."""
        lower = {name.lower(): value for name, value in headers.items()}
        # Only the two it reads, and only ASCII: httpx.Headers (inside) cannot encode anything else.
        retry = {
            name: value
            for name in ("retry-after-ms", "retry-after")
            if (value := lower.get(name)) is not None and value.isascii()
        }
        return cls(
            limit_requests=_count(lower.get("x-ratelimit-limit-requests"), minimum=1),
            remaining_requests=_count(lower.get("x-ratelimit-remaining-requests")),
            reset_requests=parse_duration(lower.get("x-ratelimit-reset-requests")),
            limit_tokens=_count(lower.get("x-ratelimit-limit-tokens"), minimum=1),
            remaining_tokens=_count(lower.get("x-ratelimit-remaining-tokens")),
            reset_tokens=parse_duration(lower.get("x-ratelimit-reset-tokens")),
            retry_after=parse_retry_after(retry, now),
        )

    @property
    def empty(self) -> bool:
        return self == RateLimitInfo()


# --- the pacing primitive --------------------------------------------------------------------------------


class Gcra:
    """The generic cell rate algorithm: a token bucket of ``burst`` units refilled at ``per_minute``, kept as
    one number, ``tat`` (theoretical arrival time: when every reservation so far is paid back and the bucket
    is full again). Pure: the caller passes the time; nothing sleeps here.

    A request of ``cost`` reserved at ``now`` moves ``tat`` to ``max(tat, now) + cost * interval`` and may go
    ``max(0, new_tat - burst * interval - now)`` seconds later. A cost above the burst is not refused: it waits
    for the refill (the bucket goes into debt), so a big request cannot starve.

    The port to Redis (``pipeline.limits_redis``) is the same arithmetic in a Lua script over one key (``now``
    from ``redis.call('TIME')`` so machines share a clock; a key that expired is a full bucket), in short::

        local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
        local new_tat = tat + cost * interval
        redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) * 1000) + 1)  -- gone = full
        return math.max(0, new_tat - burst * interval - now)                             -- the wait
    """

    __slots__ = ("interval", "burst", "tat")

    def __init__(self, per_minute: float, burst: float = 1.0, *, tat: float = -math.inf) -> None:
        if not (math.isfinite(per_minute) and per_minute > 0) or not burst >= 1:
            raise ValueError(f"a rate must be > 0 per minute and its burst >= 1 (got {per_minute!r}, {burst!r})")
        self.interval = 60.0 / per_minute
        self.burst = float(burst)
        self.tat = tat

    @property
    def per_minute(self) -> float:
        return 60.0 / self.interval

    def delay(self, now: float, cost: float = 1.0) -> float:
        """How long a request of ``cost`` arriving at ``now`` would wait; commits nothing."""
        return max(0.0, max(self.tat, now) + cost * self.interval - self.burst * self.interval - now)

    def reserve(self, now: float, cost: float = 1.0) -> float:
        """Commit a request of ``cost`` asked for at ``now``; returns how long it must wait before it goes."""
        wait = self.delay(now, cost)
        self.tat = max(self.tat, now) + cost * self.interval
        return wait

    def available(self, now: float) -> float:
        """Units that could go at ``now`` without waiting (negative: a debt)."""
        return self.burst - (max(self.tat, now) - now) / self.interval

    def set_available(self, now: float, units: float) -> None:
        """Overwrite the state: the bucket holds ``units`` at ``now`` (what the server says it holds)."""
        self.tat = now + (self.burst - units) * self.interval

    def hold(self, until: float) -> None:
        """Nothing goes before ``until`` and nothing saved up counts after it: the first request of cost 1 may
        go at ``until``, the next one interval later, and so on (how waiters leave a 429 pause spread out)."""
        self.tat = max(self.tat, until + (self.burst - 1.0) * self.interval)

    def set_rate(self, now: float, per_minute: float, burst: float) -> None:
        """Change the rate and burst, keeping what is available now (never more than the new burst)."""
        units = min(self.available(now), burst)
        changed = Gcra(per_minute, burst)
        self.interval, self.burst = changed.interval, changed.burst
        self.set_available(now, units)


# --- the limits shared between processes -----------------------------------------------------------------


class SharedLimitsError(Exception):
    """The shared store failed (unreachable, too slow, an error): the governor paces this process alone for a
    while (see the module docstring)."""


@dataclass(frozen=True)
class Bucket:
    """One GCRA kept in the shared store: ``name`` is ``pace``, ``chars`` (a configured characters per minute),
    or ``requests`` / ``tokens`` (mirrors of the server's buckets); ``interval`` is seconds per unit, ``burst``
    units, and ``cost`` what this request takes from it."""

    name: str
    interval: float
    burst: float
    cost: float = 1.0


@dataclass(frozen=True)
class Learned:
    """Limits a worker read in the server's headers, with when (seconds on the store's clock); None: unknown."""

    rpm: float | None = None
    rpm_at: float | None = None
    tpm: float | None = None
    tpm_at: float | None = None


@dataclass(frozen=True)
class Reserved:
    """One bucket's part of a reservation: its state before and after (for a refund), and the sum of sync
    corrections made to it before (for a sync from this reservation's answer)."""

    bucket: Bucket
    before: float | None  # None: the bucket was full and idle (no state)
    after: float
    adjusted: float


@dataclass(frozen=True)
class Grant:
    """A reservation in the shared store. Times are the store's seconds."""

    wait: float  # from the store's answer until the request may go
    pause: float  # left of a 429 pause some worker set (the wait includes it)
    seq: int  # reservations are numbered: an answer older than the one synced from is ignored
    at: float  # when the request is due to go
    reserved: tuple[Reserved, ...]
    learned: Learned


class SharedLimits(Protocol):
    """Where governors in many processes keep one key's rate limits: ``pipeline.limits_redis.RedisLimits``.
    Every method raises ``SharedLimitsError`` when the store fails."""

    @property
    def where(self) -> str:
        """The endpoint and the key's hash (never the key)."""
        ...

    async def reserve(self, buckets: Sequence[Bucket]) -> Grant:
        """Claim a slot in every bucket at once and say how long to wait for it (a 429 pause included), and
        what the workers learned. Cancelled after the store reserved, it gives the reservation back."""
        ...

    async def refund(self, grant: Grant) -> None:
        """Give an unused reservation back, in each bucket where nobody reserved after it."""
        ...

    async def sync(self, grant: Grant, owed: Mapping[str, float]) -> None:
        """The server's answer to ``grant``'s request said it owed ``owed[name]`` units (including this one)
        in the mirror ``name``: set the mirror so, carrying the reservations made after it."""
        ...

    async def pause(self, seconds: float, holds: Sequence[Bucket]) -> None:
        """A 429: nobody goes for ``seconds``, then ``holds`` release one interval apart (``Gcra.hold``)."""
        ...

    async def publish(self, rpm: float | None, tpm: float | None) -> None:
        """Limits read in the headers, for every worker."""
        ...


# --- the governor ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GovernorStats:
    """A snapshot for the report and the progress line. Rates are per minute."""

    released: int  # requests let go
    succeeded: int
    rate_limited: int  # 429s reported
    failed: int  # anything else (or no report)
    waited_s: float  # summed over requests: time between asking for a slot and getting it
    held_s: float  # wall time during which the next request was held back by the limit
    limit_rpm: float | None  # the request limit in force (None: none known)
    limit_source: str | None  # "config", "headers" or "429" (a cap learned from refusals)
    pace_rpm: float | None  # what requests are released at: the limit less the safety margin
    limit_tpm: float | None  # the token limit the server advertised
    concurrency: int  # requests allowed in flight now
    max_concurrency: int  # the pool's
    in_flight: int
    answered: int  # requests answered with audio over the last ``window_s`` seconds
    window_s: float  # a minute, or the time since the first request while the run is younger than that
    throttled: bool  # a request is waiting for the pace, a pause or the lowered concurrency right now
    paused_s: float  # seconds left of a 429 pause
    shared: bool | None = None  # the limits are shared with other processes (False: the store failed); None: not
    refused_s: float = 0.0  # how long the key has answered nothing but 429s (0: the last answer was audio)
    refused: int = 0  # 429s since the last answer with audio

    @property
    def achieved_rpm(self) -> float:
        """Answers over the last minute. Counted, not extrapolated: a run younger than a minute has a
        shorter window, and dividing its first burst by a few seconds read as more than the limit (539/min
        against 500); ``line`` gives such a count with its window instead."""
        return self.answered * 60.0 / RATE_WINDOW if self.window_s >= RATE_WINDOW else float(self.answered)

    def line(self) -> str:
        """One phrase for the progress line, e.g. ``held back by the rate limit: 58/min (limit 60/min from
        headers, 4 of 8 in flight allowed)``; just the achieved rate when nothing holds requests back. The
        rate is the answers of the last minute, or ``41 in the first 23 s`` before a minute has passed; after
        a long spell of refusals it says so: ``nothing but 429s for 5:02 (38 refused since the last answer)``."""
        rate = answered_in(self.answered, self.window_s)
        quiet = None
        if self.refused_s >= QUIET_S:
            minutes, seconds = divmod(int(self.refused_s), 60)
            quiet = f"nothing but 429s for {minutes}:{seconds:02d} ({self.refused} refused since the last answer)"
        if not self.throttled:
            return quiet or rate
        details = []
        if self.limit_rpm is not None:
            details.append(f"limit {self.limit_rpm:.0f}/min from {self.limit_source}")
        if self.concurrency < self.max_concurrency:
            details.append(f"{self.concurrency} of {self.max_concurrency} in flight allowed")
        if self.paused_s > 0:
            details.append(f"paused {self.paused_s:.1f} s after a 429")
        if self.shared is False:
            details.append("pacing alone: the shared limits are unreachable")
        said = quiet or f"held back by the rate limit: {rate}"
        return said + (f" ({', '.join(details)})" if details else "")


def answered_in(count: int, window_s: float) -> str:
    """Requests answered over the last minute as the progress line says it: ``58/min``, or, while the run is
    younger than a minute, ``41 in the first 23 s`` (a count over its true window, never extrapolated)."""
    return f"{count}/min" if window_s >= RATE_WINDOW else f"{count} in the first {window_s:.0f} s"


class _Release:
    __slots__ = ("seq", "at", "tokens", "refused")

    def __init__(self, seq: int, at: float, tokens: float) -> None:
        self.seq, self.at, self.tokens, self.refused = seq, at, tokens, False


class _Waiter:
    __slots__ = ("turn",)

    def __init__(self) -> None:
        self.turn = asyncio.Event()  # set when this waiter becomes the head of the line


class Slot:
    """One released request. Report its outcome once: ``done``, ``rate_limited`` or ``failed``."""

    __slots__ = ("_governor", "seq", "released_at", "cost_chars", "waited_s", "grant", "_settled")

    def __init__(
        self,
        governor: Governor,
        seq: int,
        released_at: float,
        cost_chars: int,
        waited_s: float = 0.0,
        grant: Grant | None = None,
    ) -> None:
        self._governor = governor
        self.seq = seq
        self.released_at = released_at
        self.cost_chars = cost_chars
        self.waited_s = waited_s  # how long the request was held back before it could go
        self.grant = grant  # its reservation in the shared store, if it went through one
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def done(self, info: RateLimitInfo | None = None) -> None:
        """The request got its audio; ``info`` from the answer's headers. Counts towards regrowing concurrency."""
        self._settle()
        self._governor._finish(self, "ok", info, None)

    def rate_limited(self, retry_after: float | None = None, info: RateLimitInfo | None = None) -> None:
        """The server answered 429 rate_limit_exceeded (never ``insufficient_quota``: that is fatal). Everyone
        pauses for ``retry_after`` (else ``info.retry_after``); the caller re-queues the request."""
        self._settle()
        self._governor._finish(self, "limited", info, retry_after)

    def failed(self, info: RateLimitInfo | None = None) -> None:
        """Anything else (a timeout, a 5xx, a 200 that is not audio, a cancelled request): frees the place and
        learns from ``info`` if there is one, but changes neither the pace nor the concurrency."""
        self._settle()
        self._governor._finish(self, "failed", info, None)

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"slot {self.seq} was already reported")
        self._settled = True


class _SlotContext:
    def __init__(self, governor: Governor, cost_chars: int) -> None:
        self._governor = governor
        self._cost = cost_chars
        self._slot: Slot | None = None

    async def __aenter__(self) -> Slot:
        self._slot = await self._governor.acquire(self._cost)
        return self._slot

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._slot is not None and not self._slot.settled:
            self._slot.failed()


class Governor:
    """Releases requests for one endpoint and key at the allowed pace; see the module docstring.

    ``concurrency`` is the pool's (the most ever allowed in flight); ``rpm`` and ``cpm`` are configured
    requests and characters per minute (None: unknown, learned from headers if the server sends them);
    ``burst`` overrides the request burst (default: one second's worth, at least 1); ``tokens_per_char``
    estimates a request's tokens; ``margin`` is the share of a known limit paced at. ``clock`` (monotonic
    seconds) and ``sleep`` are injectable so tests run in virtual time. ``shared`` keeps the key's budget with
    other processes (see the module docstring); ``flush`` waits until what this one told it has landed. Use
    from one event loop."""

    def __init__(
        self,
        concurrency: int = 8,
        *,
        rpm: float | None = None,
        cpm: float | None = None,
        burst: float | None = None,
        tokens_per_char: float = 1.0,
        margin: float = RATE_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        remembered_rpm: float | None = None,
        shared: SharedLimits | None = None,
        patience: float | None = DEFAULT_PATIENCE_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        for name, value in (("rpm", rpm), ("cpm", cpm)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of per minute, or None")
        if burst is not None and not burst >= 1:
            raise ValueError("burst must be >= 1")
        if not (0 < margin <= 1) or not tokens_per_char > 0:
            raise ValueError("margin must be in (0, 1] and tokens_per_char > 0")
        if patience is not None and not patience > 0:
            raise ValueError("patience must be > 0 seconds, or None")
        self._max = concurrency
        self._config_rpm = rpm
        self._burst = burst
        self._tokens_per_char = tokens_per_char
        self._margin = margin
        self._clock = clock
        self._sleep = sleep

        # What an earlier run read in this key's headers: paced at from the first request (no blind first wave),
        # until this run's own headers say otherwise.
        self._header_rpm: float | None = remembered_rpm
        self._remembered = remembered_rpm is not None
        self._header_tpm: float | None = None
        self._cap_rpm: float | None = None
        self._pace: Gcra | None = None  # our own pace for requests
        self._cap_pace: Gcra | None = None  # shared: the 429 cap paces this process apart (it is its own rate)
        self._cpm: Gcra | None = None  # our own pace for characters, when configured
        if cpm is not None:
            self._cpm = Gcra(cpm * margin, max(cpm * margin / 60 * BURST_SECONDS, CPM_MIN_BURST))
        self._server_requests: Gcra | None = None  # mirrors of the server's buckets, set from headers
        self._server_tokens: Gcra | None = None
        self._synced = {"requests": -1, "tokens": -1}  # the last release each mirror was synced from
        self._paused_until = -math.inf

        self._limit = concurrency  # allowed in flight now (AIMD)
        # Nothing tells the limit yet: at most FIRST_WAVE in flight until the first answer (it may tell).
        self._probing = rpm is None and remembered_rpm is None
        self._stopped = False  # stop(): nothing more is released
        self._patience = patience  # seconds of nothing but 429s before acquire gives up (None: never)
        self._refused_since: float | None = None  # the first 429 after the last answer with audio
        self._refused_streak = 0
        self._in_flight = 0
        self._ok_streak = 0
        self._decrease_seq = 0  # refusals of requests released before this one belong to a past wave

        self._queue: deque[_Waiter] = deque()
        self._changed = asyncio.Event()  # a place freed or the concurrency grew: wakes a head waiting for one
        self._held: str | None = None  # what holds the head of the line right now

        self._seq = 0
        self._log: deque[_Release] = deque(maxlen=LOG_SIZE)
        self._first_release: float | None = None
        self._answers: deque[float] = deque()  # success times over the last RATE_WINDOW
        self._succeeded = self._rate_limited = self._failed = 0
        self._waited_s = self._held_s = 0.0

        self._shared = shared
        self._shared_down_until = -math.inf  # pacing alone until then: the store failed
        self._shared_failing = False  # it failed and has not answered since
        self._shared_seen = Learned()  # what the store said the workers learned, at the last reservation
        self._pending: set[asyncio.Task[None]] = set()  # what is being told to the store
        self._retune(clock())

    # --- the caller's side

    @property
    def _allowed(self) -> int:
        """Requests allowed in flight now: the AIMD concurrency, and no more than the first wave while the
        limit is unknown and nothing has answered."""
        return min(self._limit, FIRST_WAVE) if self._probing else self._limit

    def stop(self) -> None:
        """The run is stopping: ``acquire`` raises ``GovernorStopped`` from now on, to the requests waiting in
        line too; the requests in flight land as they will."""
        self._stopped = True
        for waiter in self._queue:
            waiter.turn.set()
        self._changed.set()

    def _check_open(self, now: float) -> None:
        if self._stopped:
            raise GovernorStopped("the run is stopping")
        since = self._refused_since
        if self._patience is not None and since is not None and now - since >= self._patience:
            minutes, seconds = divmod(int(now - since), 60)
            raise KeyResting(
                f"the key has answered nothing but 429s (rate limit) for {minutes}:{seconds:02d}, "
                f"{self._refused_streak} refusals since the last answer with audio: stopping "
                f"(rate_limit_patience = {self._patience:g} s); the key may be limited per day or shared "
                "with something busy"
            )

    def slot(self, cost_chars: int = 0) -> _SlotContext:
        """``async with governor.slot(len(text)) as slot:`` waits like ``acquire``; leaving the block without a
        report counts as ``slot.failed()``."""
        return _SlotContext(self, cost_chars)

    async def acquire(self, cost_chars: int = 0) -> Slot:
        """Wait (first come, first served) until a request of ``cost_chars`` may go, then reserve it. Returns at
        once, without yielding, when no limit holds it back and nothing is shared. Cancelling the wait reserves
        nothing (shared: gives back what the store reserved, where it can)."""
        asked = self._clock()
        self._check_open(asked)
        if (
            self._shared is None
            and not self._queue
            and self._in_flight < self._allowed
            and self._release_time(asked, cost_chars) <= asked
        ):
            return self._release(asked, asked, cost_chars)
        waiter = _Waiter()
        self._queue.append(waiter)
        grant: Grant | None = None
        try:
            now = await self._wait_turn(waiter, cost_chars)
            if self._shared is not None:
                now, grant = await self._shared_turn(waiter, cost_chars, now)
        finally:
            self._leave(waiter)
        return self._release(asked, now, cost_chars, grant)

    async def flush(self) -> None:
        """Wait until what this governor told the shared store (limits, syncs, pauses, refunds) has landed."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    @property
    def learned_rpm(self) -> float | None:
        """The limit this run read in the server's headers, worth remembering for the next run."""
        return None if self._remembered else self._header_rpm

    def stats(self) -> GovernorStats:
        now = self._clock()
        limit, source = self._limit_rpm()
        return GovernorStats(
            released=self._seq,
            succeeded=self._succeeded,
            rate_limited=self._rate_limited,
            failed=self._failed,
            waited_s=self._waited_s,
            held_s=self._held_s,
            limit_rpm=limit,
            limit_source=source,
            pace_rpm=min((g.per_minute for g in (self._pace, self._cap_pace) if g is not None), default=None),
            limit_tpm=self._header_tpm,
            concurrency=self._allowed,
            max_concurrency=self._max,
            in_flight=self._in_flight,
            answered=self._count(self._answers, now),
            window_s=0.0 if self._first_release is None else min(RATE_WINDOW, now - self._first_release),
            throttled=self._held is not None or self._paused_until > now,
            paused_s=max(0.0, self._paused_until - now),
            shared=None if self._shared is None else not self._shared_failing,
            refused_s=0.0 if self._refused_since is None else now - self._refused_since,
            refused=self._refused_streak,
        )

    # --- waiting

    async def _wait_turn(self, waiter: _Waiter, cost_chars: int) -> float:
        if self._queue[0] is waiter:
            waiter.turn.set()
        while True:
            await waiter.turn.wait()  # only the head of the line waits on the limits; the rest wait here
            now = self._clock()
            self._check_open(now)
            if self._in_flight >= self._allowed:
                self._held = "concurrency" if self._limit < self._max else None
                self._changed.clear()
                await self._changed.wait()
                if self._held is not None:
                    self._held_s += self._clock() - now
                continue
            at = self._release_time(now, cost_chars)
            if at <= now:
                return now
            self._held = "pause" if self._paused_until > now else "pace"
            await self._sleep_or_news(at - now)
            self._held_s += self._clock() - now

    async def _sleep_or_news(self, seconds: float) -> None:
        """Sleep, but wake early when an answer changes what is known: a wait computed while requests were in
        flight counts on what they would take from the bucket, and a 429 gives that back (refused requests
        cost nothing), so the head of the line must look again rather than oversleep."""
        self._changed.clear()
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        news = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleeping, news), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, news):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeping, news, return_exceptions=True)

    def _leave(self, waiter: _Waiter) -> None:
        was_head = self._queue[0] is waiter
        self._queue.remove(waiter)
        if was_head:
            self._held = None
            if self._queue:
                self._queue[0].turn.set()

    # --- waiting on the shared store

    def _sharing(self, now: float) -> bool:
        return self._shared is not None and now >= self._shared_down_until

    async def _shared_turn(self, waiter: _Waiter, cost_chars: int, now: float) -> tuple[float, Grant | None]:
        """Reserve, then sleep: the head of the line (local limits met) claims its slot in the store and sleeps
        until it. Returns the release time and the grant (None: the store failed, paced alone)."""
        while self._sharing(now):
            buckets = self._buckets(cost_chars)
            grant = await self._reserve(buckets)
            now = self._clock()
            if grant is None:
                return await self._wait_turn(waiter, cost_chars), None  # the local limits, all of them now
            self._adopt(grant, now)
            if {b.name for b in self._buckets(cost_chars)} != {b.name for b in buckets}:
                self._refund(grant)  # it taught us a limit it did not reserve by (a worker that just started)
                continue
            go_at = now + grant.wait
            kept = True
            if go_at > now:
                self._held = "pause" if self._paused_until > now else "pace"
                try:
                    kept = await self._sleep_until(go_at)
                except asyncio.CancelledError:
                    self._refund(grant)
                    raise
                self._held_s += self._clock() - now
                now = self._clock()
            if kept and self._in_flight < self._allowed and self._release_time(now, cost_chars) <= now:
                return now, grant
            self._refund(grant)  # a 429 paused everyone or cut the concurrency meanwhile: the slot is stale
            now = await self._wait_turn(waiter, cost_chars)
        return now, None

    async def _sleep_until(self, go_at: float) -> bool:
        """Sleep until ``go_at``; False as soon as a 429 makes the reservation stale (a pause beyond it, or
        fewer places than are in flight)."""
        while (now := self._clock()) < go_at:
            await self._sleep_or_news(go_at - now)
            if self._paused_until > go_at or self._in_flight >= self._allowed:
                return False
        return True

    def _buckets(self, cost_chars: int) -> list[Bucket]:
        """What the store paces by: every limit of the key (the cap from 429s is this process's own)."""
        buckets = []
        for name, g, cost in (
            ("pace", self._pace, 1.0),
            ("requests", self._server_requests, 1.0),
            ("chars", self._cpm, float(cost_chars)),
            ("tokens", self._server_tokens, self._tokens(cost_chars)),
        ):
            if g is not None and cost > 0:
                buckets.append(Bucket(name, g.interval, g.burst, cost))
        return buckets

    async def _reserve(self, buckets: Sequence[Bucket]) -> Grant | None:
        assert self._shared is not None
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when the store answers in
            # the loop turn the task is cancelled, swallowing the cancel (a stopped run's task goes on for ever).
            async with asyncio.timeout(SHARED_TIMEOUT_S):
                grant = await self._shared.reserve(buckets)
        except (SharedLimitsError, TimeoutError) as exc:
            self._shared_failed(exc)
            return None
        self._shared_answered()
        return grant

    def _adopt(self, grant: Grant, now: float) -> None:
        """Take what the store said: a pause some worker set, limits some worker read (newest wins)."""
        if grant.pause > 0:
            self._paused_until = max(self._paused_until, now + grant.pause)
        seen, learned = self._shared_seen, grant.learned
        if learned.rpm is not None and learned.rpm_at is not None and learned.rpm_at > (seen.rpm_at or -math.inf):
            self._learn_rpm(learned.rpm, now)
        if learned.tpm is not None and learned.tpm_at is not None and learned.tpm_at > (seen.tpm_at or -math.inf):
            self._learn_tpm(learned.tpm, now)
        self._shared_seen = learned

    def _refund(self, grant: Grant) -> None:
        if grant.reserved:
            shared = self._shared
            assert shared is not None
            self._tell(lambda: shared.refund(grant))

    def _tell(self, call: Callable[[], Awaitable[None]]) -> None:
        """Tell the store something in the background (outcomes are reported from synchronous code); its
        failure is the store failing like any other."""
        if not self._sharing(self._clock()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # reported outside any event loop: nothing to share it with
        task = loop.create_task(self._told(call))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _told(self, call: Callable[[], Awaitable[None]]) -> None:
        try:
            async with asyncio.timeout(SHARED_TIMEOUT_S):  # not wait_for: see _reserve
                await call()
        except (SharedLimitsError, TimeoutError) as exc:
            self._shared_failed(exc)

    def _shared_failed(self, exc: BaseException) -> None:
        assert self._shared is not None
        why = str(exc) or type(exc).__name__
        if not self._shared_failing:  # once per outage, not once per SHARED_RETRY_S
            log.warning(
                "rate limits shared for %s unavailable (%s): this process paces alone, at the whole key's rate, "
                "asking again every %g s",
                self._shared.where,
                why,
                SHARED_RETRY_S,
            )
        else:
            log.debug("rate limits shared for %s still unavailable (%s)", self._shared.where, why)
        self._shared_failing = True
        self._shared_down_until = self._clock() + SHARED_RETRY_S

    def _shared_answered(self) -> None:
        if self._shared_failing:
            assert self._shared is not None
            log.warning("rate limits shared for %s available again", self._shared.where)
            self._shared_failing = False
            self._shared_down_until = -math.inf

    # --- the limits in force

    def _costs(self, cost_chars: int) -> list[tuple[Gcra, float]]:
        costs: list[tuple[Gcra, float]] = []
        if self._pace is not None:
            costs.append((self._pace, 1.0))
        if self._cap_pace is not None:
            costs.append((self._cap_pace, 1.0))
        if self._server_requests is not None:
            costs.append((self._server_requests, 1.0))
        if self._cpm is not None and cost_chars > 0:
            costs.append((self._cpm, float(cost_chars)))
        if self._server_tokens is not None:
            costs.append((self._server_tokens, self._tokens(cost_chars)))
        return costs

    def _tokens(self, cost_chars: int) -> float:
        return float(max(1, math.ceil(cost_chars * self._tokens_per_char)))

    def _release_time(self, now: float, cost_chars: int) -> float:
        if self._sharing(now):  # the store paces by the key's limits; only this process's cap is waited for here
            costs = [] if self._cap_pace is None else [(self._cap_pace, 1.0)]
        else:
            costs = self._costs(cost_chars)
        wait = max((g.delay(now, cost) for g, cost in costs), default=0.0)
        return max(self._paused_until, now + wait)

    def _release(self, asked: float, now: float, cost_chars: int, grant: Grant | None = None) -> Slot:
        # Shared too: the local buckets then count this process's requests alone, a start if the store fails.
        for g, cost in self._costs(cost_chars):
            g.reserve(now, cost)
        seq = self._seq
        self._seq += 1
        self._in_flight += 1
        self._waited_s += now - asked
        if self._first_release is None:
            self._first_release = now
        self._log.append(_Release(seq, now, self._tokens(cost_chars)))
        return Slot(self, seq, now, cost_chars, now - asked, grant)

    # --- outcomes

    def _finish(self, slot: Slot, outcome: str, info: RateLimitInfo | None, retry_after: float | None) -> None:
        now = self._clock()
        self._in_flight -= 1
        self._probing = False  # whatever it said (a limit, or none), the first answer opens the pool
        if outcome == "limited":
            if self._refused_since is None:
                self._refused_since = now
            self._refused_streak += 1
            self._rate_limited += 1
            entry = self._entry(slot.seq)
            if entry is not None:
                entry.refused = True  # it took nothing from the server's token bucket
        if info is not None:
            self._learn(slot, info, now)
        if outcome == "ok":
            self._refused_since, self._refused_streak = None, 0
            self._succeeded += 1
            self._record(self._answers, now)
            self._ok_streak += 1
            if self._limit < self._max and self._ok_streak >= self._limit:
                self._limit += 1
                self._ok_streak = 0
            if self._cap_rpm is not None:
                self._cap_rpm += CAP_STEP_RPM
                self._retune(now)
        elif outcome == "limited":
            if retry_after is None and info is not None:
                retry_after = info.retry_after
            self._on_rate_limit(slot, retry_after, now)
        else:
            self._failed += 1
        self._changed.set()

    def _on_rate_limit(self, slot: Slot, retry_after: float | None, now: float) -> None:
        if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
            pause = DEFAULT_PAUSE
        else:
            pause = min(retry_after, MAX_PAUSE)
        if slot.seq >= self._decrease_seq:  # the first refusal of this wave
            self._limit = max(1, self._limit // 2)
            self._decrease_seq = self._seq
            self._ok_streak = 0
            if self._header_rpm is None:  # headers are the truth; without them, learn a cap from what got through
                answered = self._per_minute(self._answers, now) if len(self._answers) >= MIN_SAMPLES else None
                known = [r for r in (self._cap_rpm, self._config_rpm, answered) if r is not None]
                if known:
                    self._cap_rpm = max(MIN_CAP_RPM, CAP_DECREASE * min(known))
                    self._retune(now)
        until = now + pause
        self._paused_until = max(self._paused_until, until)
        holds = [(name, g) for name, g in (("pace", self._pace), ("requests", self._server_requests)) if g is not None]
        for _, g in holds:
            g.hold(until)
        if self._shared is not None:
            shared, held = self._shared, [Bucket(name, g.interval, g.burst) for name, g in holds]
            self._tell(lambda: shared.pause(pause, held))

    def _learn(self, slot: Slot, info: RateLimitInfo, now: float) -> None:
        rpm = None if info.limit_requests is None else float(info.limit_requests)
        tpm = None if info.limit_tokens is None else float(info.limit_tokens)
        seen = self._shared_seen
        if self._shared is not None and (rpm not in (None, seen.rpm) or tpm not in (None, seen.tpm)):
            self._publish(rpm, tpm)
        if rpm is not None:
            self._learn_rpm(rpm, now)
        if tpm is not None:
            self._learn_tpm(tpm, now)
        if self._server_requests is not None:
            self._sync("requests", self._server_requests, slot, info.remaining_requests, info.reset_requests)
        if self._server_tokens is not None:
            self._sync("tokens", self._server_tokens, slot, info.remaining_tokens, info.reset_tokens)
        if self._shared is not None and slot.grant is not None:
            owed = {
                kind: self._owed(mirror, remaining, reset)
                for kind, mirror, remaining, reset in (
                    ("requests", self._server_requests, info.remaining_requests, info.reset_requests),
                    ("tokens", self._server_tokens, info.remaining_tokens, info.reset_tokens),
                )
                if mirror is not None and (remaining is not None or reset is not None)
            }
            if owed:
                shared, grant = self._shared, slot.grant
                self._tell(lambda: shared.sync(grant, owed))

    def _publish(self, rpm: float | None, tpm: float | None) -> None:
        """This answer's limits differ from what the store holds (news, or the store lost them): tell it."""
        shared, seen = self._shared, self._shared_seen
        assert shared is not None
        self._tell(lambda: shared.publish(rpm, tpm))
        # Told once, not once per answer until the next reservation reads it back.
        self._shared_seen = Learned(rpm if rpm is not None else seen.rpm, seen.rpm_at,
                                    tpm if tpm is not None else seen.tpm, seen.tpm_at)  # fmt: skip

    def _learn_rpm(self, rpm: float, now: float) -> None:
        self._remembered = False
        self._probing = False
        if rpm != self._header_rpm:
            self._header_rpm = rpm
            self._cap_rpm = None  # the server said what the limit is
            self._retune(now)
        self._server_requests = self._mirror(self._server_requests, rpm, now)

    def _learn_tpm(self, tpm: float, now: float) -> None:
        self._header_tpm = tpm
        self._server_tokens = self._mirror(self._server_tokens, tpm, now)

    @staticmethod
    def _mirror(mirror: Gcra | None, per_minute: float, now: float) -> Gcra:
        # OpenAI's bucket holds a whole minute's worth (reset 12ms after 1 request of 5000/min).
        if mirror is None:
            return Gcra(per_minute, per_minute)
        if mirror.per_minute != per_minute:
            mirror.set_rate(now, per_minute, per_minute)
        return mirror

    def _sync(self, kind: str, mirror: Gcra, slot: Slot, remaining: int | None, reset: float | None) -> None:
        """Set the mirror to what the server said when ``slot`` arrived, then replay what left after it."""
        if (remaining is None and reset is None) or slot.seq <= self._synced[kind]:
            return  # nothing said, or an answer older than the one already synced from
        if not self._log or self._log[0].seq > slot.seq:
            return  # too old to replay from
        owed = self._owed(mirror, remaining, reset)
        later: list[_Release] = []
        for entry in reversed(self._log):
            if entry.seq <= slot.seq:
                break
            later.append(entry)
        tat = slot.released_at + owed * mirror.interval
        for entry in reversed(later):
            if not entry.refused:
                tat = max(tat, entry.at) + (1.0 if kind == "requests" else entry.tokens) * mirror.interval
        mirror.tat = tat
        self._synced[kind] = slot.seq

    @staticmethod
    def _owed(mirror: Gcra, remaining: int | None, reset: float | None) -> float:
        """Units the server's bucket owed when it counted the request, that request included."""
        # For a token bucket both say the same, but "remaining" is the direct statement and wins: OpenAI's own
        # sample pairs 149984 of 150000 tokens left with a reset of 6m0s, which would read as six minutes of
        # debt. A reset alone never reads as more than an empty bucket.
        if remaining is not None:
            return mirror.burst - remaining
        assert reset is not None
        return min(reset / mirror.interval, mirror.burst)

    def _entry(self, seq: int) -> _Release | None:
        if not self._log or not self._log[0].seq <= seq <= self._log[-1].seq:
            return None
        return self._log[seq - self._log[0].seq]

    # --- the rate in force

    def _limit_rpm(self, with_cap: bool = True) -> tuple[float | None, str | None]:
        headers = "an earlier run's headers" if self._remembered else "headers"
        known = [(r, s) for r, s in ((self._config_rpm, "config"), (self._header_rpm, headers),
                                     (self._cap_rpm if with_cap else None, "429")) if r is not None]  # fmt: skip
        if not known:
            return None, None
        return min(known, key=lambda pair: pair[0])

    def _retune(self, now: float) -> None:
        # Shared, the pace is the key's (from the configuration and headers, the same for every worker) and the
        # cap paces this process alone: it was measured on what this process got through, a share of the key.
        limit, _ = self._limit_rpm(with_cap=self._shared is None)
        self._pace = None if limit is None else self._paced(self._pace, limit, now)
        if self._shared is not None:
            self._cap_pace = None if self._cap_rpm is None else self._paced(self._cap_pace, self._cap_rpm, now)

    def _paced(self, g: Gcra | None, limit: float, now: float) -> Gcra:
        pace = limit * self._margin
        burst = self._burst if self._burst is not None else max(1.0, math.floor(pace / 60 * BURST_SECONDS))
        if g is None:
            g = Gcra(pace, burst)
            if self._seq:  # learned mid-run: whatever burst the server had, the requests in flight used it
                g.set_available(now, 1.0)
        elif g.per_minute != pace or g.burst != burst:
            g.set_rate(now, pace, burst)
        return g

    # --- rates

    @staticmethod
    def _record(times: deque[float], now: float) -> None:
        times.append(now)
        while times and times[0] < now - RATE_WINDOW:
            times.popleft()

    @staticmethod
    def _count(times: deque[float], now: float) -> int:
        while times and times[0] < now - RATE_WINDOW:
            times.popleft()
        return len(times)

    def _per_minute(self, times: deque[float], now: float) -> float:
        while times and times[0] < now - RATE_WINDOW:
            times.popleft()
        if not times or self._first_release is None:
            return 0.0
        span = max(1.0, min(RATE_WINDOW, now - self._first_release))
        return len(times) * 60.0 / span


# --- limits remembered between runs ------------------------------------------------------------------------

REMEMBER_DAYS = 7  # a key's tier can change; a limit older than this is read again from the headers


def recall(path: Path, where: str, now: float | None = None) -> float | None:
    """The requests-per-minute limit an earlier run read for ``where`` (an endpoint and a key's hash), if it
    is recent; None when there is none or the file cannot be read (it is only a head start)."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8")).get(where)
        rpm, learned = float(entry["rpm"]), float(entry["learned"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    fresh = (time.time() if now is None else now) - learned < REMEMBER_DAYS * 86400
    return rpm if fresh and math.isfinite(rpm) and rpm > 0 else None


def remember(path: Path, learned: Mapping[str, float], now: float | None = None) -> None:
    """Add what this run read to the file (endpoint and key hash -> limit; never a key)."""
    if not learned:
        return
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    stamp = time.time() if now is None else now
    known.update({where: {"rpm": rpm, "learned": stamp} for where, rpm in learned.items()})
    atomic_write(path, json.dumps(known, indent=1, sort_keys=True) + "\n")
