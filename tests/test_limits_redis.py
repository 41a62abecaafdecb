"""The rate governor shared through Redis, against a real redis-server of the test's own (``tests/redisserver.py``).

The scripts' arithmetic is checked at given times against ``Gcra``'s; the governors run on real time (Redis's
clock is the machine's), at rates high enough that each test takes a few seconds at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from pipeline import limits
from pipeline.limits import RATE_MARGIN, Bucket, Gcra, Governor, RateLimitInfo
from pipeline.models import BackendOptions
from pipeline.tts.registry import Synthesizers
from tests.helpers import FAKE_KEY, run_in_threads
from tests.redisserver import RedisServer

redis = pytest.importorskip("redis", reason="the redis package is not installed (the 'distributed' extra)")
limits_redis = pytest.importorskip("pipeline.limits_redis")
RedisLimits = limits_redis.RedisLimits

WHERE = "openai:api.example/v1 key:0123456789abcdef"


@pytest.fixture
def connect(redis_url: str) -> Iterator[Callable[[], redis.Redis]]:
    """Clients of the test's server, closed afterwards."""
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        client = limits_redis.connect(redis_url)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def worker_limits(connect: Callable[[], redis.Redis]) -> Iterator[Callable[[str], RedisLimits]]:
    """``RedisLimits`` for ``where`` as one worker process would make it: with a client of its own."""
    made: list[RedisLimits] = []

    def make(where: str = WHERE) -> RedisLimits:
        made.append(RedisLimits(connect(), where))
        return made[-1]

    yield make
    for shared in made:
        shared.close()


@pytest.fixture
def shared(worker_limits: Callable[[str], RedisLimits]) -> RedisLimits:
    return worker_limits(WHERE)


# --- the scripts against Gcra ------------------------------------------------------------------------------

T0 = 1_000_000.0  # a made-up time on the store's clock


@pytest.mark.parametrize(
    ("per_minute", "burst", "arrivals"),
    [
        (60, 3, [(0, 1), (0, 1), (0, 1), (0, 1), (0, 1), (3, 1), (100, 1), (100, 1), (100.5, 2)]),
        (600, 10, [(0, 25), (0, 1), (0.5, 3), (5, 10), (5, 1), (5.05, 1)]),  # a cost above the burst: debt
        (6000, 1, [(0, 1), (0, 1), (0.001, 1), (0.5, 1), (0.5, 1), (0.5, 1)]),
        (150_000, 150_000, [(0, 149_984), (0, 100), (1, 300), (1.5, 4096), (400, 1)]),  # a token mirror
    ],
)
def test_the_lua_gcra_is_gcra(
    shared: RedisLimits, per_minute: float, burst: float, arrivals: list[tuple[float, float]]
) -> None:
    g = Gcra(per_minute, burst)
    for offset, cost in arrivals:
        now = T0 + offset
        grant = shared.reserve_now([Bucket("pace", g.interval, burst, cost)], at=now)
        wait = g.reserve(now, cost)
        assert grant.wait == pytest.approx(wait, abs=1e-9) and grant.at == pytest.approx(now + wait, abs=1e-9)
        assert grant.reserved[0].after == pytest.approx(g.tat, abs=1e-9)


def test_the_lua_reservation_matches_the_local_governors_buckets(shared: RedisLimits) -> None:
    """The local governor waits until every bucket allows, then reserves each at that time; so does the script."""
    pace, chars = Gcra(60, 2), Gcra(6000, 200)  # 1 request a second; 100 characters a second
    for offset, size in [(0, 150), (0, 150), (0, 10), (0.1, 10), (3, 190), (3, 5)]:
        now = T0 + offset
        buckets = [Bucket("pace", pace.interval, pace.burst), Bucket("chars", chars.interval, chars.burst, size)]
        grant = shared.reserve_now(buckets, at=now)
        go = max(now + pace.delay(now), now + chars.delay(now, size))  # what Governor._release_time waits for
        pace.reserve(go)
        chars.reserve(go, size)
        assert grant.at == pytest.approx(go, abs=1e-9)
        assert [r.after for r in grant.reserved] == pytest.approx([pace.tat, chars.tat], abs=1e-9)


def test_a_pause_holds_then_releases_one_interval_apart(shared: RedisLimits) -> None:
    g = Gcra(600, 5)
    bucket = Bucket("pace", g.interval, 5)
    shared.reserve_now([bucket], at=T0)
    g.reserve(T0)
    until = shared.pause_now(2.0, [bucket], at=T0 + 0.5)
    g.hold(T0 + 2.5)
    assert until == pytest.approx(T0 + 2.5)
    for now in (T0 + 0.6, T0 + 0.6, T0 + 3.0, T0 + 3.0):
        grant = shared.reserve_now([bucket], at=now)
        assert grant.wait == pytest.approx(g.reserve(now), abs=1e-9)
    assert grant.pause == 0.0
    # Without a pace (no limit known) the pause alone holds, and the reservation says how much is left.
    grant = shared.reserve_now([], at=T0 + 1.0)
    assert grant.wait == pytest.approx(1.5) and grant.pause == pytest.approx(1.5) and grant.reserved == ()


def test_an_unused_reservation_is_given_back_only_while_it_is_the_last(shared: RedisLimits) -> None:
    bucket = Bucket("pace", 1.0, 1)  # one a second, no burst
    first = shared.reserve_now([bucket], at=T0)
    second = shared.reserve_now([bucket], at=T0)
    assert (first.wait, second.wait) == (0.0, 1.0)
    assert shared.refund_now(second, at=T0) == 1  # the last one: given back exactly
    assert shared.reserve_now([bucket], at=T0).wait == 1.0
    assert shared.refund_now(first, at=T0) == 0  # others reserved after it: lost (under-use, never over)
    assert shared.reserve_now([bucket], at=T0).wait == 2.0


def test_a_sync_carries_the_reservations_made_after_the_answered_one(shared: RedisLimits) -> None:
    """``test_limits.test_remaining_and_reset_slow_down_before_a_429`` against the store: a key shared with
    another program, whose bucket the server says is empty."""
    mirror = Bucket("requests", 0.1, 600)  # 600 a minute, a minute's worth of burst
    a = shared.reserve_now([mirror], at=T0)
    b = shared.reserve_now([mirror], at=T0)
    assert shared.sync_now(a, {"requests": 600 - 0}, at=T0 + 0.05) == 1  # a's answer: nothing remaining
    c = shared.reserve_now([mirror], at=T0 + 0.05)
    assert c.at == pytest.approx(T0 + 0.2)  # the bucket refills 1 per 0.1 s, and b took the first
    assert shared.sync_now(b, {"requests": 600 - 40}, at=T0 + 0.2) == 1  # b's answer is newer: 40 left
    assert shared.reserve_now([mirror], at=T0 + 0.2).wait == 0.0
    assert shared.sync_now(a, {"requests": 600}, at=T0 + 0.2) == 0  # older than the last synced: ignored
    assert shared.sync_now(c, {"other": 1.0}, at=T0 + 0.2) == 0  # a mirror it did not reserve in


def test_an_answer_from_before_redis_lost_its_data_is_not_synced(
    redis_server: RedisServer, shared: RedisLimits
) -> None:
    mirror = Bucket("requests", 0.1, 600)
    for _ in range(5):
        old = shared.reserve_now([mirror], at=T0)
    redis_server.stop()
    redis_server.start()  # empty: the reservation counter starts again from 1
    new = shared.reserve_now([mirror], at=T0)
    assert new.seq == 1 < old.seq
    assert shared.sync_now(old, {"requests": 600}, at=T0) == 0  # it would hide the next 4 answers
    assert shared.sync_now(new, {"requests": 10}, at=T0) == 1


# --- governors sharing one budget ------------------------------------------------------------------------


@dataclass
class Worker:
    """A governor as one worker process would hold it, with its requests' release times (``time.monotonic``)
    and the times the store scheduled them at (its clock; None: paced alone), which scheduling jitter on
    shared cores cannot blur."""

    governor: Governor
    released: list[float] = field(default_factory=list)
    scheduled: list[float | None] = field(default_factory=list)

    async def run(self, until: float, latency: float = 0.05, tasks: int = 8) -> None:
        """``tasks`` requests in flight at most, each taking ``latency``, until ``until`` (then cancelled)."""

        async def task() -> None:
            while time.monotonic() < until:  # ends by itself too: a swallowed cancel must not keep it going
                async with self.governor.slot(100) as slot:
                    self.released.append(time.monotonic())
                    self.scheduled.append(None if slot.grant is None else slot.grant.at)
                    await asyncio.sleep(latency)
                    slot.done()

        running = [asyncio.create_task(task()) for _ in range(tasks)]
        await asyncio.sleep(until - time.monotonic())
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self.governor.flush()


def most_in_any_window(times: list[float | None], rate_per_s: float) -> float:
    """The largest excess of releases over ``rate * span`` in any window between two releases."""
    times = sorted(t for t in times if t is not None)
    return max(
        (j - i + 1) - rate_per_s * (times[j] - times[i]) for i in range(len(times)) for j in range(i, len(times))
    )


def test_two_workers_sharing_a_key_release_its_rate_together(worker_limits: Callable[[str], RedisLimits]) -> None:
    """Two governors (as two workers: each in an event loop and thread of its own, with its own Redis client)
    share one key at 600 a minute; two others each have a key of their own. Over 3 s the pair releases what
    one key allows, burst included, while each alone releases as much as the pair."""
    seconds, rpm = 3.0, 600.0
    pace = rpm * RATE_MARGIN / 60  # 9.7 a second
    burst = 9  # one second's worth
    until = time.monotonic() + seconds

    def worker(where: str) -> Worker:
        async def main() -> Worker:
            w = Worker(Governor(8, rpm=rpm, shared=worker_limits(where)))
            await w.run(until)
            return w

        return asyncio.run(main())

    one, two, alone_a, alone_b = run_in_threads(worker, [WHERE, WHERE, f"{WHERE}0", f"{WHERE}1"], within=60)
    together = one.released + two.released
    assert len(together) <= burst + pace * seconds + 1
    assert None not in one.scheduled + two.scheduled
    # GCRA's bound in any window; times near 1.8e9 s are doubles good to a quarter of a microsecond.
    assert most_in_any_window(one.scheduled + two.scheduled, pace) <= burst + 1e-4
    assert len(together) >= 0.8 * (burst + pace * (seconds - 0.2))  # and not much less
    assert min(len(one.released), len(two.released)) >= 0.3 * len(together)  # both get turns
    for w in (alone_a, alone_b):
        assert len(w.released) >= 0.8 * len(together)  # alone, each goes as fast as the pair
        assert w.governor.stats().shared is True


def test_a_limit_one_worker_reads_in_headers_paces_the_other(shared: RedisLimits) -> None:
    async def main() -> None:
        reader, other = Governor(8, shared=shared), Governor(8, shared=shared)
        async with reader.slot(100) as slot:
            slot.done(RateLimitInfo(limit_requests=600, remaining_requests=599, limit_tokens=150_000))
        await reader.flush()
        learned = shared.learned()
        assert (learned.rpm, learned.tpm) == (600.0, 150_000.0) and learned.rpm_at is not None
        assert other.stats().limit_rpm is None  # it has not asked the store yet
        async with other.slot(100) as slot:
            # The reservation that brought the news was given back and made again by the new pace.
            assert slot.grant is not None and {r.bucket.name for r in slot.grant.reserved} == {
                "pace", "requests", "tokens"}  # fmt: skip
            slot.done()
        stats = other.stats()
        assert (stats.limit_rpm, stats.limit_source, stats.limit_tpm) == (600.0, "headers", 150_000.0)
        assert stats.pace_rpm == pytest.approx(600 * RATE_MARGIN)
        assert other.learned_rpm == 600.0  # worth remembering for the next run

    asyncio.run(main())


def test_a_429_one_worker_gets_holds_the_other(shared: RedisLimits) -> None:
    async def main() -> None:
        rpm = 6000.0  # a pace fast enough to see the pause
        refused, other = Governor(8, rpm=rpm, shared=shared), Governor(8, rpm=rpm, shared=shared)
        (await other.acquire()).done()
        (await refused.acquire()).rate_limited(0.4)
        asked = time.monotonic()
        await refused.flush()
        released, scheduled = [], []
        for _ in range(3):
            slot = await other.acquire()
            released.append(time.monotonic())
            assert slot.grant is not None
            scheduled.append(slot.grant.at)
            slot.done()
        assert released[0] - asked >= 0.35  # held until the end of the pause another worker met
        assert released[0] - asked < 0.4 + 0.25
        # Then one pace interval apart, not all at once (although the pace's burst is 97): the k-th after the
        # pause is due no sooner than k intervals after it (later if it asked later: slots missed are caught up).
        interval = 60 / (rpm * RATE_MARGIN)
        assert all(at - scheduled[0] >= k * interval - 1e-5 for k, at in enumerate(scheduled))

    asyncio.run(main())


def test_a_cancelled_waiter_gives_its_reservation_back(shared: RedisLimits) -> None:
    async def main() -> None:
        governor = Governor(8, rpm=60, burst=1, shared=shared)  # one a second
        (await governor.acquire()).done()
        waiting = asyncio.create_task(governor.acquire())
        await asyncio.sleep(0.2)  # it has reserved the next second and sleeps
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await governor.flush()
        grant = shared.reserve_now([Bucket("pace", 60 / (60 * RATE_MARGIN), 1)])
        assert grant.wait == pytest.approx(1.03 - 0.2, abs=0.1)  # the slot it left, not the one after it

    asyncio.run(main())


def test_a_reservation_made_stale_by_a_429_is_made_again_after_the_pause(shared: RedisLimits) -> None:
    async def main() -> tuple[float, float]:
        governor = Governor(8, rpm=600, burst=1, shared=shared)  # one every 0.1 s
        first = await governor.acquire()
        start = time.monotonic()
        waiting = asyncio.create_task(governor.acquire())  # reserves the next slot, 0.1 s away, and sleeps
        await asyncio.sleep(0.05)
        first.rate_limited(0.3)  # everyone waits until 0.35 s: that slot would go in the middle of the pause
        slot = await waiting
        slot.done()
        await governor.flush()
        return time.monotonic() - start, governor.stats().held_s

    went, held = asyncio.run(main())
    assert went >= 0.33 and held >= 0.3


def test_a_slow_redis_counts_as_failed_and_a_late_reservation_is_given_back(
    shared: RedisLimits, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(limits, "SHARED_TIMEOUT_S", 0.1)
    reserve_now = shared.reserve_now

    def slow(buckets: list[Bucket], at: float | None = None) -> limits.Grant:
        grant = reserve_now(buckets, at)  # made in Redis, but the answer comes too late
        time.sleep(0.3)
        return grant

    monkeypatch.setattr(shared, "reserve_now", slow)

    async def main() -> None:
        governor = Governor(8, rpm=60, burst=1, shared=shared)
        asked = time.monotonic()
        slot = await governor.acquire()
        assert 0.1 <= time.monotonic() - asked < 0.3  # it did not wait for Redis...
        assert slot.grant is None and governor.stats().shared is False  # ...and paced alone
        slot.done()
        await asyncio.sleep(0.6)  # the late answer lands, and is given back

    with caplog.at_level(logging.WARNING, logger="audiobook"):
        asyncio.run(main())
    assert any("unavailable (TimeoutError)" in r.getMessage() for r in caplog.records)
    assert reserve_now([Bucket("pace", 60 / (60 * RATE_MARGIN), 1)]).wait == 0.0  # the bucket is full again


# --- what is kept in Redis ------------------------------------------------------------------------------


def test_redis_holds_no_secret_only_the_endpoint_and_the_keys_hash(
    connect: Callable[[], redis.Redis], worker_limits: Callable[[str], RedisLimits]
) -> None:
    """Through the registry, as a worker makes its governors: every key and value in Redis, searched."""
    client = connect()
    options = BackendOptions(base_url="https://api.example.com/v1", rpm=6000)
    env = {"OPENAI_API_KEY": FAKE_KEY}
    synths = Synthesizers(8, env, shared=worker_limits)
    governor = synths.governor(options)
    headers = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "5990",
               "x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "149000"}  # fmt: skip

    async def main() -> None:
        for _ in range(3):
            (await governor.acquire(100)).done(RateLimitInfo.from_headers(headers))
        (await governor.acquire(100)).rate_limited(0.05)
        (await governor.acquire(100)).done(RateLimitInfo.from_headers(headers))
        await synths.aclose()

    asyncio.run(main())
    prefix = f"audiobook:rate:{{openai:api.example.com/v1 key:{options.key_id(env)}}}:"
    names = sorted(k.decode() for k in client.scan_iter("*"))
    assert names == [prefix + name for name in ("learned", "pace", "requests", "seq", "tokens")]  # pause expired
    secret = FAKE_KEY.encode()
    for name in names:
        kind = client.type(name).decode()
        values = client.hgetall(name).items() if kind == "hash" else [(b"", client.get(name))]
        assert secret not in name.encode() and all(secret not in k + v for k, v in values)
        assert client.pttl(name) > 0  # everything expires
    with pytest.raises(ValueError, match="hash tag"):
        RedisLimits(client, "openai:{weird} key:abc")


# --- Redis going away ---------------------------------------------------------------------------------------


def test_when_redis_goes_away_each_worker_paces_alone_and_rejoins(
    redis_server: RedisServer,
    shared: RedisLimits,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Decided: a run never fails for the store. Each worker paces alone at the whole key's rate (with a
    warning), asks again every SHARED_RETRY_S, and shares again once Redis answers."""
    monkeypatch.setattr(limits, "SHARED_RETRY_S", 0.3)
    rpm = 1200.0
    pace, burst = rpm * RATE_MARGIN / 60, 19  # 19.4 a second

    async def main() -> tuple[Worker, list[bool | None], float, float]:
        worker = Worker(Governor(8, rpm=rpm, shared=shared))
        start = time.monotonic()
        running = asyncio.create_task(worker.run(start + 2.4, latency=0.02))
        seen: list[bool | None] = []
        await asyncio.sleep(0.6)
        seen.append(worker.governor.stats().shared)
        redis_server.stop()
        stopped = time.monotonic()
        await asyncio.sleep(0.8)
        seen.append(worker.governor.stats().shared)
        redis_server.start()  # back, empty
        restarted = time.monotonic()
        await running
        seen.append(worker.governor.stats().shared)
        return worker, seen, stopped, restarted

    with caplog.at_level(logging.WARNING, logger="audiobook"):
        worker, seen, stopped, restarted = asyncio.run(main())
    assert seen == [True, False, True]
    assert any("unavailable" in r.getMessage() and "paces alone" in r.getMessage() for r in caplog.records)
    assert any("available again" in r.getMessage() for r in caplog.records)
    alone = [t for t, at in zip(worker.released, worker.scheduled, strict=True) if at is None]
    assert all(stopped < t < restarted + 0.5 for t in alone)
    assert len(alone) >= 0.5 * pace * (restarted - stopped)  # it kept going...
    assert len(alone) <= burst + pace * (restarted - stopped) + 1  # ...at the key's pace, on its own
    stats = worker.governor.stats()
    assert stats.released == len(worker.released) and stats.in_flight == 0
