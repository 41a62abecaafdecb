"""One key's rate limits in Redis, shared by the governors of every worker that speaks through it.

A module apart from ``pipeline.limits`` so that the process-local governor never imports ``redis`` (an optional
extra: ``pip install 'audiobook-pipeline[distributed]'``), and the Lua sits next to the code that calls it::

    client = limits_redis.connect("redis://queue.local:6379/0")            # one per process, any event loop
    governor = Governor(8, rpm=500, shared=RedisLimits(client, where))     # where: endpoint + the key's hash

Keys, for ``where`` = ``openai:api.openai.com/v1 key:1a2b3c4d5e6f7a8b`` (the registry's form: never the key)::

    audiobook:rate:{openai:api.openai.com/v1 key:1a2b…}:pace       hash tat, adj, synced   GCRA of the pace
    audiobook:rate:{…}:chars / :requests / :tokens                  hash, the same          configured cpm; mirrors
    audiobook:rate:{…}:pause                                        string                  a 429's end (store time)
    audiobook:rate:{…}:seq                                          counter                 numbers reservations
    audiobook:rate:{…}:learned                                      hash rpm, rpm_at, tpm, tpm_at

The braces are a hash tag: on a Redis Cluster all of one key's state is in one slot, as a script needs. Times are
seconds on the Redis server's clock (``TIME``), so machines whose clocks differ still share one. A bucket's
``tat`` is ``Gcra.tat``; a bucket whose ``tat`` has passed is full, so its expiry (when it is full, plus
``KEEP_S``) only collects garbage. ``adj`` sums the corrections syncs made, ``synced`` is the reservation number
last synced from.

The client is synchronous (``redis.Redis``), called from one thread of this object's own: one client per process
serves every event loop and thread in it (a Celery worker's too), a slow or dead Redis blocks that thread, never
the loop, and one worker's calls reach Redis in the order they were made. Each call is one round trip of a
script; the governor gives up on it after ``SHARED_TIMEOUT_S`` (``redis.asyncio`` would tie the client to one
event loop, and save only a thread hop per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.limits import Bucket, Grant, Learned, Reserved, SharedLimitsError

log = logging.getLogger("audiobook")

NAMESPACE = "audiobook:rate"
KEEP_S = 120.0  # a bucket outlives its refill by this: a mirror's `synced` must outlast late answers (see sync)
KEEP_SEQ_S = 86400.0  # the reservation counter: restarting from 0 after a day idle loses nothing
KEEP_LEARNED_S = 7 * 86400.0  # as limits.REMEMBER_DAYS: a key's tier can change
CONNECT_TIMEOUT_S = 1.0


def connect(url: str, timeout: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    """A client for ``RedisLimits``: short timeouts and one retry (a dropped idle connection reconnects), since
    the governor paces alone rather than wait for a Redis that does not answer (redis-py's default retries ten
    times)."""
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
    )
    return client


# Shared by the scripts: the clock (ARGV[1]: a time for tests, '' for the server's) and exact numbers.
_PRELUDE = """
local function clock()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
local function ms(seconds) return math.max(1, math.ceil(seconds * 1000)) end
local now = clock()
"""

# Gcra.reserve over several buckets at once, from the same time: the request goes when every bucket and the
# pause allow it, and is charged in each as if it arrived then (as the local governor does). A cost above a
# bucket's burst goes into debt there, as Gcra.reserve does.
# KEYS: pause, seq, learned, then a hash per bucket. ARGV: now, keep_ms, keep_seq_ms, then interval, burst and
# cost per bucket. Returns now, go, pause left, seq, the learned limits, then before, after, adj per bucket.
_RESERVE = (
    _PRELUDE
    + """
local keep, n = tonumber(ARGV[2]), #KEYS - 3
local paused = tonumber(redis.call('GET', KEYS[1]) or '')
local go = now
if paused and paused > go then go = paused end
local tat, interval, burst, cost = {}, {}, {}, {}
for i = 1, n do
  local a = 3 * i + 1
  interval[i], burst[i], cost[i] = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  tat[i] = tonumber(redis.call('HGET', KEYS[3 + i], 'tat') or '')
  local due = math.max(tat[i] or now, now) + (cost[i] - burst[i]) * interval[i]
  if due > go then go = due end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
local learned = redis.call('HMGET', KEYS[3], 'rpm', 'rpm_at', 'tpm', 'tpm_at')
local reply = {num(now), num(go), num(math.max(0, (paused or now) - now)), seq, learned}
for i = 1, n do
  local at = math.max(now, go - math.max(0, (cost[i] - burst[i]) * interval[i]))
  local after = math.max(tat[i] or at, at) + cost[i] * interval[i]
  redis.call('HSET', KEYS[3 + i], 'tat', num(after))
  redis.call('PEXPIRE', KEYS[3 + i], ms(after - now) + keep)
  local adj = redis.call('HGET', KEYS[3 + i], 'adj') or '0'
  table.insert(reply, {tat[i] and num(tat[i]) or '', num(after), adj})
end
return reply
"""
)

# Give a reservation back in each bucket where it is still the last (nobody reserved, synced or held since).
# KEYS: buckets. ARGV: now (unused), then after and before ('' = no state) per bucket. Returns how many.
_REFUND = (
    _PRELUDE
    + """
local refunded = 0
for i = 1, #KEYS do
  local tat = tonumber(redis.call('HGET', KEYS[i], 'tat') or '')
  if tat and tat == tonumber(ARGV[2 * i]) then
    local before = ARGV[2 * i + 1]
    if before == '' then redis.call('HDEL', KEYS[i], 'tat') else redis.call('HSET', KEYS[i], 'tat', before) end
    refunded = refunded + 1
  end
end
return refunded
"""
)

# A mirror from an answer: the server owed `owed` units when it counted reservation `seq` (due at `at`), so the
# bucket then stood at said = at + owed * interval where we had `after`. Everything reserved since stays on
# top: tat + (said - after), less the corrections other syncs made since (they are in tat already; `adjusted`
# is what adj was at the reservation). Exact while the bucket was never full meanwhile; when it was, the
# result errs by at most the idle time, where the bucket had room anyway. An answer to an older reservation
# than the last synced is ignored, and so is one numbered above the counter: reserved before Redis lost its
# data (a restart), it would block the answers to every reservation since. When the bucket has expired (full
# for KEEP_S) an old answer cannot harm: a mirror's burst is a minute's worth, so `said` is at most a minute
# after `at`, long past.
# KEYS: seq, then buckets. ARGV: now, keep_ms, seq, at, then after, adjusted, owed, interval per bucket.
_SYNC = (
    _PRELUDE
    + """
local keep, seq, at = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if seq > tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
local synced = 0
for i = 2, #KEYS do
  local a = 4 * i - 3
  local after, adjusted = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local owed, interval = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local last = tonumber(redis.call('HGET', KEYS[i], 'synced') or '')
  if not last or seq > last then
    local tat = tonumber(redis.call('HGET', KEYS[i], 'tat') or '')
    local adj = tonumber(redis.call('HGET', KEYS[i], 'adj') or '0')
    local said = at + owed * interval
    local new = said
    if tat then
      new = math.max(tat + (said - after) - (adj - adjusted), said)
      adj = adj + (new - tat)
    end
    redis.call('HSET', KEYS[i], 'tat', num(new), 'adj', num(adj), 'synced', seq)
    redis.call('PEXPIRE', KEYS[i], ms(new - now) + keep)
    synced = synced + 1
  end
end
return synced
"""
)

# A 429: nobody goes before now + seconds, and each held bucket releases one interval apart after it
# (Gcra.hold). KEYS: pause, then buckets. ARGV: now, keep_ms, seconds, then interval and burst per bucket.
_PAUSE = (
    _PRELUDE
    + """
local keep, till = tonumber(ARGV[2]), now + tonumber(ARGV[3])
local paused = tonumber(redis.call('GET', KEYS[1]) or '')
if not paused or till > paused then redis.call('SET', KEYS[1], num(till), 'PX', ms(till - now)) end
for i = 2, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local held = till + (burst - 1) * interval
  local tat = tonumber(redis.call('HGET', KEYS[i], 'tat') or '')
  if not tat or held > tat then
    redis.call('HSET', KEYS[i], 'tat', num(held))
    redis.call('PEXPIRE', KEYS[i], ms(held - now) + keep)
  end
end
return num(till)
"""
)

# Limits read in headers. KEYS: learned. ARGV: now, keep_ms, then name and value pairs (rpm, tpm).
_PUBLISH = (
    _PRELUDE
    + """
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i] .. '_at', num(now))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return num(now)
"""
)


class RedisLimits:
    """``SharedLimits`` in Redis for one endpoint and key: ``where`` names them (the registry's ``"{identity}
    key:{key hash}"``; never the key: it is in every Redis key name). ``namespace`` prefixes the key names.

    The methods' ``at`` computes at that time instead of the server's clock: for tests, which compare the
    arithmetic with ``Gcra``'s."""

    def __init__(self, client: redis.Redis, where: str, *, namespace: str = NAMESPACE) -> None:
        if not where or "{" in where or "}" in where:
            raise ValueError(f"the limits' name must be non-empty, without braces (it is a hash tag): {where!r}")
        self._client = client
        self._where = where
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="redis-limits")
        self.prefix = f"{namespace}:{{{where}}}"
        self._reserve_script = client.register_script(_RESERVE)
        self._refund_script = client.register_script(_REFUND)
        self._sync_script = client.register_script(_SYNC)
        self._pause_script = client.register_script(_PAUSE)
        self._publish_script = client.register_script(_PUBLISH)

    @property
    def where(self) -> str:
        return self._where

    def close(self) -> None:
        """Stop its thread once the calls made have run (the client is the caller's to close)."""
        self._thread.shutdown(wait=False)

    def key(self, name: str) -> str:
        """The Redis key of ``name``: ``pause``, ``seq``, ``learned`` or a bucket's name."""
        return f"{self.prefix}:{name}"

    # --- the SharedLimits protocol

    async def reserve(self, buckets: Sequence[Bucket], *, at: float | None = None) -> Grant:
        future = asyncio.get_running_loop().run_in_executor(self._thread, self.reserve_now, buckets, at)
        try:
            return await asyncio.shield(future)  # a cancelled caller leaves the call running, to give it back
        except asyncio.CancelledError:
            future.add_done_callback(self._give_back)
            raise

    async def refund(self, grant: Grant, *, at: float | None = None) -> None:
        await self._off_loop(self.refund_now, grant, at)

    async def sync(self, grant: Grant, owed: Mapping[str, float], *, at: float | None = None) -> None:
        await self._off_loop(self.sync_now, grant, owed, at)

    async def pause(self, seconds: float, holds: Sequence[Bucket], *, at: float | None = None) -> None:
        await self._off_loop(self.pause_now, seconds, holds, at)

    async def publish(self, rpm: float | None, tpm: float | None, *, at: float | None = None) -> None:
        await self._off_loop(self.publish_now, rpm, tpm, at)

    # --- the same, blocking (each one script: one round trip)

    def reserve_now(self, buckets: Sequence[Bucket], at: float | None = None) -> Grant:
        keys = [self.key("pause"), self.key("seq"), self.key("learned"), *(self.key(b.name) for b in buckets)]
        args: list[Any] = [_time(at), _ms(KEEP_S), _ms(KEEP_SEQ_S)]
        for b in buckets:
            args += [repr(b.interval), repr(b.burst), repr(b.cost)]
        reply = self._run(self._reserve_script, keys, args)
        try:
            now, go, pause, seq, learned = float(reply[0]), float(reply[1]), float(reply[2]), int(reply[3]), reply[4]
            reserved = tuple(
                Reserved(b, float(before) if before else None, float(after), float(adj))
                for b, (before, after, adj) in zip(buckets, reply[5:], strict=True)
            )
            rpm, rpm_at, tpm, tpm_at = (None if v is None else float(v) for v in learned)
        except (TypeError, ValueError, IndexError) as exc:
            raise SharedLimitsError(f"Redis answered a reservation with {reply!r}") from exc
        return Grant(go - now, pause, seq, go, reserved, Learned(rpm, rpm_at, tpm, tpm_at))

    def refund_now(self, grant: Grant, at: float | None = None) -> int:
        args: list[Any] = [_time(at)]
        for r in grant.reserved:
            args += [repr(r.after), "" if r.before is None else repr(r.before)]
        return int(self._run(self._refund_script, [self.key(r.bucket.name) for r in grant.reserved], args))

    def sync_now(self, grant: Grant, owed: Mapping[str, float], at: float | None = None) -> int:
        mirrors = [r for r in grant.reserved if r.bucket.name in owed]
        if not mirrors:
            return 0  # the reservation did not go through the mirror (it was learned after): nothing to carry
        args: list[Any] = [_time(at), _ms(KEEP_S), grant.seq, repr(grant.at)]
        for r in mirrors:
            args += [repr(r.after), repr(r.adjusted), repr(float(owed[r.bucket.name])), repr(r.bucket.interval)]
        keys = [self.key("seq"), *(self.key(r.bucket.name) for r in mirrors)]
        return int(self._run(self._sync_script, keys, args))

    def pause_now(self, seconds: float, holds: Sequence[Bucket], at: float | None = None) -> float:
        args: list[Any] = [_time(at), _ms(KEEP_S), repr(float(seconds))]
        for b in holds:
            args += [repr(b.interval), repr(b.burst)]
        return float(self._run(self._pause_script, [self.key("pause"), *(self.key(b.name) for b in holds)], args))

    def publish_now(self, rpm: float | None, tpm: float | None, at: float | None = None) -> None:
        pairs = [(name, repr(float(v))) for name, v in (("rpm", rpm), ("tpm", tpm)) if v is not None]
        if pairs:
            args: list[Any] = [_time(at), _ms(KEEP_LEARNED_S), *(x for pair in pairs for x in pair)]
            self._run(self._publish_script, [self.key("learned")], args)

    def learned(self) -> Learned:
        """What the workers learned (for a report, or a test)."""
        try:
            values = self._client.hmget(self.key("learned"), ["rpm", "rpm_at", "tpm", "tpm_at"])
        except redis.RedisError as exc:
            raise SharedLimitsError(f"Redis: {exc}") from exc
        rpm, rpm_at, tpm, tpm_at = (None if v is None else float(v) for v in values)
        return Learned(rpm, rpm_at, tpm, tpm_at)

    # --- plumbing

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise SharedLimitsError(f"Redis: {exc}") from exc

    async def _off_loop(self, call: Any, *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    def _give_back(self, future: asyncio.Future[Grant]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        grant = future.result()
        if grant.reserved:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the slot is lost, the safe way
                asyncio.get_running_loop().run_in_executor(self._thread, self._refund_quietly, grant)

    def _refund_quietly(self, grant: Grant) -> None:
        try:
            self.refund_now(grant)
        except SharedLimitsError as exc:  # one slot lost: the safe way
            log.debug("could not give back a reservation of %s: %s", self._where, exc)


def _time(at: float | None) -> str:
    return "" if at is None else repr(float(at))


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)
