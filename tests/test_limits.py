"""The rate governor: OpenAI's header formats, the GCRA, and the governor itself, on a fake clock or in virtual
time (an event loop whose clock jumps to the next timer), so a ten-minute simulation runs in a fraction of a
second and nothing sleeps for real.

``python -m tests.test_limits`` prints the simulation figures.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import KeyResting
from pipeline.limits import (
    FIRST_WAVE,
    RATE_MARGIN,
    Gcra,
    Governor,
    GovernorStats,
    GovernorStopped,
    RateLimitInfo,
    Slot,
    parse_duration,
    parse_retry_after,
    recall,
    remember,
)
from tests.fakeserver import RateBucket

T = TypeVar("T")


# --- virtual time ----------------------------------------------------------------------------------------


class _JumpingSelector(selectors.SelectSelector):
    """Polls instead of blocking; when nothing is ready, the loop's clock jumps by the timeout instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set (a deadlock)")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """asyncio with a clock that starts at 0 and only moves when every task waits: ``asyncio.sleep`` is exact
    and instant, and tasks still interleave in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def now() -> float:
    return asyncio.get_running_loop().time()


def virtual_governor(concurrency: int = 8, **kwargs: Any) -> Governor:
    return Governor(concurrency, clock=asyncio.get_running_loop().time, **kwargs)


def test_virtual_time_orders_sleepers_and_does_not_wait() -> None:
    async def main() -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            seen.append((name, now()))

        await asyncio.gather(sleeper("b", 3600.0), sleeper("a", 1.5))
        return seen

    assert run_virtual(main) == [("a", 1.5), ("b", 3600.0)]


# --- a clock for one task --------------------------------------------------------------------------------


class FakeClock:
    """A clock and a sleep that advances it: enough for one task at a time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s without any limit")


def finished_without_waiting(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine one step: it must finish without ever suspending."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("it suspended")


# --- header formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0), ("1s", 1.0), ("250ms", 0.25), ("59.5s", 59.5), ("1h2m3.5s", 3723.5), ("20ms", 0.02),
        ("0s", 0.0), ("12ms", 0.012), ("9ms", 0.009), ("1m30s", 90.0), ("1h0m0s", 3600.0), ("8.64s", 8.64),
        ("1.5µs", 1.5e-6), ("500us", 5e-4), ("100ns", 1e-7), (" 1s ", 1.0),
        ("0", 0.0), ("12", 12.0), ("0.5", 0.5),  # Azure OpenAI: bare seconds
    ],
)  # fmt: skip
def test_reset_durations_as_openai_and_azure_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", " ", "s", "ms", "abc", "1x", "1 s", "1s1s", "2m1h", "1ms1s", "-1s", "+1s", "1.s", "1..5s", "1e3s", "inf",
     "nan", "6m0", "1h2m3.5", "0x10s", "1s ms", "1,5s", "9" * 400, "Tue, 16 Feb 2021 09:02:42 GMT", "\u0663s",
     None],
)  # fmt: skip
def test_garbage_durations_are_none(text: str | None) -> None:
    assert parse_duration(text) is None


OPENAI_SAMPLE = {  # the rate limits guide's table of sample values
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}


def test_info_from_openai_headers() -> None:
    assert RateLimitInfo.from_headers(OPENAI_SAMPLE) == RateLimitInfo(
        limit_requests=60, remaining_requests=59, reset_requests=1.0,
        limit_tokens=150000, remaining_tokens=149984, reset_tokens=360.0,
    )  # fmt: skip
    shouting = {name.upper(): value for name, value in OPENAI_SAMPLE.items()}
    assert RateLimitInfo.from_headers(shouting) == RateLimitInfo.from_headers(OPENAI_SAMPLE)


def test_info_ignores_what_it_cannot_read() -> None:
    azure = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0"}
    assert RateLimitInfo.from_headers(azure) == RateLimitInfo(reset_tokens=0.0)
    junk = {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "5.5",
            "x-ratelimit-reset-requests": "soon", "x-ratelimit-limit-tokens": "1e6",
            "x-ratelimit-remaining-tokens": "\u0666\u0660",  # Arabic-Indic "60": int() would take it
            "retry-after": "\u0663", "x-other": "caf\u00e9"}  # fmt: skip
    info = RateLimitInfo.from_headers(junk)
    assert info.empty and RateLimitInfo.from_headers({}).empty


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "1500"}, {"retry-after-ms": "1500", "retry-after": "9"}, {"retry-after": "20"},
        {"retry-after": "0.5"}, {"retry-after": "-10"}, {"retry-after": "Fri, 29 Sep 2023 16:27:07 GMT"},
        {"retry-after-ms": "x", "retry-after": "3"}, {"retry-after": "soon"}, {},
    ],
)  # fmt: skip
def test_retry_after_is_the_http_clients_reading(headers: dict[str, str]) -> None:
    clock = 1696004817.0  # 2023-09-29 16:26:57 UTC, as the SDK's own table freezes it
    assert RateLimitInfo.from_headers(headers, now=clock).retry_after == parse_retry_after(headers, now=clock)


# --- GCRA ------------------------------------------------------------------------------------------------


def test_gcra_lets_the_burst_through_then_paces() -> None:
    g = Gcra(60, burst=3)
    assert [g.reserve(10.0) for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert g.delay(10.0) == 3.0 and g.delay(10.0) == 3.0  # a question commits nothing
    assert g.available(13.0) == pytest.approx(-2.0 + 3.0)
    assert g.reserve(100.0) == 0.0 and g.available(100.0) == pytest.approx(2.0)  # idle time refills, up to burst


def test_gcra_cost_above_the_burst_waits_for_the_refill_instead_of_failing() -> None:
    g = Gcra(600, burst=10)  # 10 per second
    assert g.reserve(0.0, cost=25) == pytest.approx(1.5)
    assert g.reserve(0.0, cost=1) == pytest.approx(1.6)


def test_gcra_hold_and_set_available_and_set_rate() -> None:
    g = Gcra(60, burst=5)
    g.hold(7.0)
    assert g.delay(6.9) == pytest.approx(0.1) and g.reserve(7.0) == 0.0 and g.reserve(7.0) == pytest.approx(1.0)
    g.set_available(20.0, 2)
    assert [g.reserve(20.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    g.set_rate(20.0, 120, 10)  # keeps the debt of one request: half a second at the new rate
    assert g.available(20.0) == pytest.approx(-1.0) and g.delay(20.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        Gcra(0)
    with pytest.raises(ValueError):
        Gcra(60, burst=0.5)


@given(
    per_minute=st.floats(1, 100_000),
    burst=st.floats(1, 50),
    arrivals=st.lists(st.tuples(st.floats(0, 5), st.floats(0.5, 4)), min_size=1, max_size=60),
)
def test_gcra_releases_never_exceed_burst_plus_rate(
    per_minute: float, burst: float, arrivals: list[tuple[float, float]]
) -> None:
    """Whatever the arrivals, in any window [a, b] of release times: sum(costs) <= burst + rate * (b - a),
    allowing one request of any cost to go (in debt) even when it alone exceeds the burst."""
    g, now, releases = Gcra(per_minute, burst), 0.0, []
    for gap, cost in arrivals:
        now += gap
        releases.append((now + g.reserve(now, cost), cost))
    assert all(a[0] <= b[0] + 1e-9 for a, b in zip(releases, releases[1:], strict=False))  # FIFO
    rate = per_minute / 60
    for i in range(len(releases)):
        for j in range(i + 1, len(releases)):
            span = releases[j][0] - releases[i][0]
            used = sum(cost for _, cost in releases[i : j + 1])
            assert used <= max(burst, releases[j][1]) + rate * span + releases[i][1] + 1e-6


# --- the governor, one task at a time --------------------------------------------------------------------


def test_without_limits_acquire_never_waits_nor_yields() -> None:
    governor = Governor(8, clock=lambda: 5.0, sleep=_no_sleep)
    finished_without_waiting(governor.acquire(300)).done(RateLimitInfo())  # the first answer: no limit told
    for _ in range(1000):
        slots = [finished_without_waiting(governor.acquire(300)) for _ in range(8)]
        for slot in slots:
            slot.done(RateLimitInfo())
    stats = governor.stats()
    assert (stats.released, stats.succeeded, stats.waited_s, stats.held_s) == (8001, 8001, 0.0, 0.0)
    assert (stats.concurrency, stats.limit_rpm, stats.pace_rpm, stats.throttled) == (8, None, None, False)


def test_a_configured_rpm_paces_requests_at_the_margin() -> None:
    clock = FakeClock()
    governor = Governor(8, rpm=60, clock=clock, sleep=clock.sleep)

    async def run() -> list[float]:
        times = []
        for _ in range(5):
            slot = await governor.acquire()
            times.append(clock.now)
            slot.done()
        return times

    interval = 60 / (60 * RATE_MARGIN)
    assert asyncio.run(run()) == pytest.approx([0, interval, 2 * interval, 3 * interval, 4 * interval])
    stats = governor.stats()
    assert (stats.limit_rpm, stats.limit_source, stats.pace_rpm) == (60, "config", pytest.approx(60 * RATE_MARGIN))
    assert stats.waited_s == pytest.approx(4 * interval) and stats.held_s == pytest.approx(4 * interval)


def test_the_lower_of_configured_and_advertised_limits_wins() -> None:
    lower_in_headers = Governor(8, rpm=100, clock=lambda: 0.0, sleep=_no_sleep)
    finished_without_waiting(lower_in_headers.acquire()).done(RateLimitInfo(limit_requests=60))
    assert (lower_in_headers.stats().limit_rpm, lower_in_headers.stats().limit_source) == (60, "headers")

    lower_in_config = Governor(8, rpm=50, clock=lambda: 0.0, sleep=_no_sleep)
    finished_without_waiting(lower_in_config.acquire()).done(RateLimitInfo(limit_requests=60))
    assert (lower_in_config.stats().limit_rpm, lower_in_config.stats().limit_source) == (50, "config")


def test_headers_learned_mid_run_pace_from_the_next_request() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> list[float]:
        first = await governor.acquire()
        first.done(RateLimitInfo(limit_requests=120, remaining_requests=119, reset_requests=0.5))
        times = []
        for _ in range(3):
            (await governor.acquire()).done()
            times.append(clock.now)
        return times

    interval = 60 / (120 * RATE_MARGIN)
    # What was in flight used the server's burst, so the new pace starts with one request, not a burst.
    assert asyncio.run(run()) == pytest.approx([0, interval, 2 * interval])
    assert governor.stats().limit_source == "headers"


def test_remaining_and_reset_slow_down_before_a_429() -> None:
    """A key shared with another program: the server says its bucket is empty although we sent little."""
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> tuple[float, float]:
        a, b = await governor.acquire(), await governor.acquire()  # both at t=0
        clock.now = 0.05
        a.done(RateLimitInfo(limit_requests=600, remaining_requests=0, reset_requests=60.0))
        await governor.acquire()  # the server's bucket refills 1 per 0.1 s and b, in flight, took the first
        c_at = clock.now
        b.done(RateLimitInfo(limit_requests=600, remaining_requests=40, reset_requests=56.0))
        await governor.acquire()
        return c_at, clock.now

    c_at, d_at = asyncio.run(run())
    assert c_at == pytest.approx(0.2)
    assert d_at == pytest.approx(0.2)  # b's answer is newer: the server had 40 left, so d goes at once


def test_the_docs_sample_does_not_read_as_six_minutes_of_debt() -> None:
    """OpenAI's sample says 149984 of 150000 tokens left but a reset of 6m0s: remaining is what counts."""
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=_no_sleep)
    finished_without_waiting(governor.acquire(100)).done(RateLimitInfo.from_headers(OPENAI_SAMPLE))
    clock.now += 1.0
    finished_without_waiting(governor.acquire(100))
    # A reset alone reads as an empty bucket at worst: the next token after one interval (0.4 ms here).
    reset_only = Governor(8, clock=clock, sleep=clock.sleep)
    finished_without_waiting(reset_only.acquire(1)).done(RateLimitInfo(limit_tokens=150_000, reset_tokens=360.0))
    asyncio.run(reset_only.acquire(1))
    assert clock.sleeps == [pytest.approx(0.0004)]


def test_out_of_order_answers_do_not_undo_newer_information() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> float:
        a, b = await governor.acquire(), await governor.acquire()
        b.done(RateLimitInfo(limit_requests=600, remaining_requests=0))  # newer: empty
        a.done(RateLimitInfo(limit_requests=600, remaining_requests=500))  # older: ignored
        await governor.acquire()
        return clock.now

    assert asyncio.run(run()) == pytest.approx(0.1)


def test_a_token_limit_counts_characters_as_tokens() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> float:
        (await governor.acquire(500)).done(RateLimitInfo(limit_tokens=6000, remaining_tokens=0))
        await governor.acquire(50)  # 50 characters: 50 tokens at 100 per second
        return clock.now

    assert asyncio.run(run()) == pytest.approx(0.5)
    assert governor.stats().limit_tpm == 6000 and governor.stats().limit_rpm is None


def test_a_configured_characters_per_minute_paces_by_text_length() -> None:
    clock = FakeClock()
    governor = Governor(8, cpm=60_000 / RATE_MARGIN, clock=clock, sleep=clock.sleep)  # 1000 characters a second

    async def run() -> list[float]:
        times = []
        for size in (4096, 1000, 500, 0):
            (await governor.acquire(size)).done()
            times.append(clock.now)
        return times

    # The burst holds one request of OpenAI's largest input; a request with no size costs no characters.
    assert asyncio.run(run()) == pytest.approx([0.0, 1.0, 1.5, 1.5])


def test_concurrency_halves_once_per_wave_and_grows_back_slowly() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=_no_sleep)
    finished_without_waiting(governor.acquire()).done()  # the first answer told no limit: all 8 may go
    slots = [finished_without_waiting(governor.acquire()) for _ in range(8)]
    for slot in slots[:4]:
        slot.rate_limited(0.5)  # one wave of refusals: all were sent before the first came back
    assert governor.stats().concurrency == 4
    clock.now += 1.0  # after the pause
    for slot in slots[4:]:
        slot.done()  # 4 successes at 4 allowed: one more
    assert governor.stats().concurrency == 5
    limits = []
    for _ in range(40):
        finished_without_waiting(governor.acquire()).done()
        limits.append(governor.stats().concurrency)
    assert limits[:12] == [5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 7, 7] and max(limits) == 8 == limits[-1]

    for expected in (4, 2, 1, 1):  # each new wave halves again, never below one
        finished_without_waiting(governor.acquire()).rate_limited(0.5)
        assert governor.stats().concurrency == expected
        clock.now += 1.0


def test_a_429_without_any_known_limit_caps_the_rate_below_what_got_through() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> None:
        for _ in range(10):  # one a second, answered
            (await governor.acquire()).done()
            clock.now += 1.0
        (await governor.acquire()).rate_limited(2.0)

    asyncio.run(run())
    stats = governor.stats()
    # 10 answers over the 10 s since the first release: 60/min, capped at 70 % of it.
    assert (stats.limit_rpm, stats.limit_source) == (pytest.approx(42.0), "429")
    assert stats.paused_s == 2.0 and stats.throttled and stats.rate_limited == 1
    paused_at = clock.now
    asyncio.run(governor.acquire())
    assert clock.now == paused_at + 2.0  # the next request goes when the pause is over, not before


def test_the_429_cap_grows_back_and_yields_to_the_headers() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep)

    async def run() -> GovernorStats:
        for _ in range(10):
            (await governor.acquire()).done()
            clock.now += 1.0
        (await governor.acquire()).rate_limited(0.5)
        for _ in range(5):
            (await governor.acquire()).done()
        grown = governor.stats()
        (await governor.acquire()).done(RateLimitInfo(limit_requests=300))
        return grown

    grown = asyncio.run(run())
    assert grown.limit_rpm == pytest.approx(42.0 + 5) and grown.limit_source == "429"
    assert (governor.stats().limit_rpm, governor.stats().limit_source) == (300, "headers")


def test_a_slot_reports_once_and_defaults_to_failed() -> None:
    governor = Governor(2, clock=lambda: 0.0, sleep=_no_sleep)

    async def run() -> Slot:
        async with governor.slot(10) as slot:
            pass  # no report: a failure that changes no rate
        with pytest.raises(KeyError):
            async with governor.slot(10):
                raise KeyError("boom")
        async with governor.slot(10) as reported:
            reported.done()
        return slot

    slot = asyncio.run(run())
    stats = governor.stats()
    assert (stats.released, stats.failed, stats.succeeded, stats.in_flight) == (3, 2, 1, 0)
    with pytest.raises(RuntimeError, match="already reported"):
        slot.done()


def test_the_progress_line() -> None:
    base = GovernorStats(
        released=100, succeeded=98, rate_limited=1, failed=1, waited_s=40.0, held_s=30.0, limit_rpm=60.0,
        limit_source="headers", pace_rpm=58.2, limit_tpm=None, concurrency=8, max_concurrency=8, in_flight=3,
        answered=58, window_s=60.0, throttled=True, paused_s=0.0,
    )  # fmt: skip
    assert base.line() == "held back by the rate limit: 58/min (limit 60/min from headers)"
    cut = GovernorStats(**{**base.__dict__, "concurrency": 4, "paused_s": 1.25})
    assert cut.line() == (
        "held back by the rate limit: 58/min (limit 60/min from headers, 4 of 8 in flight allowed, "
        "paused 1.2 s after a 429)"
    )
    assert GovernorStats(**{**base.__dict__, "throttled": False}).line() == "58/min"


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"rpm": 0}, {"cpm": -1}, {"burst": 0.5}, {"margin": 1.5}, {"tokens_per_char": 0}):
        with pytest.raises(ValueError):
            Governor(8, **kwargs)
    with pytest.raises(ValueError):
        Governor(0)


# --- the governor, many tasks ----------------------------------------------------------------------------


def test_a_429_pauses_everyone_then_releases_them_one_interval_apart() -> None:
    async def main() -> tuple[list[float], GovernorStats]:
        governor = virtual_governor(4)
        (await governor.acquire()).done(RateLimitInfo(limit_requests=600))
        await asyncio.sleep(5.0)
        refused, other = await governor.acquire(), await governor.acquire()
        refused.rate_limited(2.0)  # everyone waits 2 s; concurrency 4 -> 2
        other.done()
        released: list[float] = []

        async def worker() -> None:
            async with governor.slot() as slot:
                released.append(now())
                await asyncio.sleep(10.0)
                slot.done()

        tasks = [asyncio.create_task(worker()) for _ in range(3)]
        await asyncio.sleep(1.0)
        during = governor.stats()
        await asyncio.gather(*tasks)
        return released, during

    released, during = run_virtual(main)
    interval = 60 / (600 * RATE_MARGIN)
    # Two places: the first at the end of the pause, the next one interval later (not in lockstep); the third
    # waits for a place, which the first frees at 12 s.
    assert released == pytest.approx([7.0, 7.0 + interval, 17.0])
    assert during.throttled and during.paused_s == pytest.approx(1.0) and during.concurrency == 2
    assert "paused 1.0 s after a 429" in during.line()


def test_many_tasks_are_released_first_come_first_served_within_the_concurrency() -> None:
    async def main() -> tuple[list[int], int, GovernorStats]:
        governor = virtual_governor(8, rpm=6000)
        order: list[int] = []
        peak = 0

        async def worker(i: int) -> None:
            nonlocal peak
            await asyncio.sleep(i * 1e-6)  # arrive in index order
            async with governor.slot() as slot:
                order.append(i)
                peak = max(peak, governor.stats().in_flight)
                await asyncio.sleep(0.5)
                slot.done()

        await asyncio.gather(*(worker(i) for i in range(200)))
        return order, peak, governor.stats()

    order, peak, stats = run_virtual(main)
    assert order == list(range(200)) and peak == 8
    assert (stats.released, stats.in_flight, stats.throttled) == (200, 0, False)


def test_a_cancelled_waiter_leaves_the_line_without_a_trace() -> None:
    async def main() -> tuple[list[str], GovernorStats]:
        governor = virtual_governor(1)
        holder = await governor.acquire()
        got: list[str] = []

        async def wait_for(name: str) -> None:
            (await governor.acquire()).done()
            got.append(name)

        head, second = asyncio.create_task(wait_for("head")), asyncio.create_task(wait_for("second"))
        await asyncio.sleep(1.0)
        head.cancel()
        await asyncio.sleep(1.0)
        holder.done()
        await second
        assert head.cancelled()
        return got, governor.stats()

    got, stats = run_virtual(main)
    assert got == ["second"] and (stats.released, stats.in_flight) == (2, 0)


# --- first contact, stopping, patience, the rate shown -----------------------------------------------------


def test_until_the_first_answer_only_a_first_wave_goes() -> None:
    async def main() -> tuple[list[float], GovernorStats, GovernorStats]:
        governor = virtual_governor(16)
        released: list[float] = []

        async def worker(i: int) -> None:
            async with governor.slot() as slot:
                released.append(now())
                await asyncio.sleep(1.0 + i * 1e-3)
                slot.done(RateLimitInfo(limit_requests=6000) if i == 0 else None)

        tasks = [asyncio.create_task(worker(i)) for i in range(20)]
        await asyncio.sleep(0.5)
        probing = governor.stats()
        await asyncio.gather(*tasks)
        return released, probing, governor.stats()

    released, probing, after = run_virtual(main)
    # Nothing told the limit: 4 go; the first answer (at 1 s) names 6000/min and opens the other 12 places.
    assert released[:FIRST_WAVE] == [0.0] * FIRST_WAVE and min(released[FIRST_WAVE:]) == pytest.approx(1.0)
    assert probing.in_flight == FIRST_WAVE and probing.concurrency == FIRST_WAVE
    assert after.concurrency == 16 and after.limit_source == "headers"


@pytest.mark.parametrize("known", [{"rpm": 6000}, {"remembered_rpm": 6000}])
def test_a_configured_or_remembered_limit_needs_no_first_wave(known: dict[str, float]) -> None:
    governor = Governor(16, clock=lambda: 0.0, sleep=_no_sleep, **known)
    assert governor.stats().concurrency == 16


def test_an_answer_without_limits_opens_the_pool_unpaced() -> None:
    governor = Governor(16, clock=lambda: 0.0, sleep=_no_sleep)
    first = [finished_without_waiting(governor.acquire()) for _ in range(FIRST_WAVE)]
    first[0].failed()  # any answer, even a failure: nothing to learn, nothing to wait for
    more = [finished_without_waiting(governor.acquire()) for _ in range(16 - FIRST_WAVE + 1)]
    assert governor.stats().in_flight == 16 and len(more) == 13


def test_after_stop_nothing_more_is_released_and_the_line_is_emptied() -> None:
    async def main() -> tuple[list[str], GovernorStats]:
        governor = virtual_governor(1, rpm=60)
        holder = await governor.acquire()
        outcomes: list[str] = []

        async def waiter() -> None:
            try:
                async with governor.slot():
                    outcomes.append("released")
            except GovernorStopped:
                outcomes.append("stopped")

        tasks = [asyncio.create_task(waiter()) for _ in range(3)]
        await asyncio.sleep(0.1)
        governor.stop()
        await asyncio.gather(*tasks)
        holder.rate_limited(1.0)  # the request in flight lands (refused): it is reported, not sent again
        with pytest.raises(GovernorStopped):
            await governor.acquire()
        return outcomes, governor.stats()

    outcomes, stats = run_virtual(main)
    assert outcomes == ["stopped"] * 3 and (stats.released, stats.in_flight) == (1, 0)


def test_nothing_but_429s_for_the_patience_stops_with_one_line() -> None:
    clock = FakeClock()
    governor = Governor(4, clock=clock, sleep=clock.sleep, patience=600.0)

    async def refused_for(seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end:
            (await governor.acquire()).rate_limited(20.0)

    async def run() -> tuple[GovernorStats, float]:
        await refused_for(300.0)
        (await governor.acquire()).done()  # one answer with audio: patience starts over
        assert governor.stats().refused_s == 0.0 and "429s" not in governor.stats().line()
        since = clock.now
        await refused_for(90.0)
        quiet = governor.stats()
        with pytest.raises(KeyResting) as stopped:
            await refused_for(3600.0)
        assert "for 10:00, 30 refusals since the last answer" in str(stopped.value)
        assert "(rate_limit_patience = 600 s)" in str(stopped.value)
        return quiet, clock.now - since

    quiet, waited = asyncio.run(run())
    assert quiet.line() == (
        "nothing but 429s for 1:40 (6 refused since the last answer) (1 of 4 in flight allowed, paused 20.0 s after "
        "a 429)"
    )
    assert waited == pytest.approx(600.0)  # stopped at the first request after the patience, not later


def test_the_rate_shown_is_counted_never_extrapolated_past_the_limit() -> None:
    async def main() -> tuple[GovernorStats, GovernorStats]:
        governor = virtual_governor(16, rpm=500)

        async def worker() -> None:
            while now() < 150.0:
                async with governor.slot() as slot:
                    await asyncio.sleep(0.2)
                    slot.done()

        tasks = [asyncio.create_task(worker()) for _ in range(16)]
        await asyncio.sleep(10.0)
        early = governor.stats()
        await asyncio.sleep(110.0)
        late = governor.stats()
        await asyncio.gather(*tasks)
        return early, late

    early, late = run_virtual(main)
    # The burst of the first second divided by ten seconds read as 534/min against a limit of 500.
    assert early.line().startswith(f"held back by the rate limit: {early.answered} in the first 10 s (limit 500/min")
    assert late.achieved_rpm <= 500 and late.line().startswith(f"held back by the rate limit: {late.answered}/min")


# --- simulations -----------------------------------------------------------------------------------------

ONE_WAY = 0.03  # seconds of network each way


@dataclass(frozen=True)
class Simulation:
    name: str
    requests: int  # sent, refusals included
    refused: int
    refused_after_headers: int | None  # refusals of requests sent after the first x-ratelimit-* were read
    elapsed: float  # simulated seconds until the last answer
    ideal: float  # requests needed / the server's rate
    stats: GovernorStats | None

    @property
    def used(self) -> float:
        """The share of the server's limit the run achieved."""
        return self.ideal / self.elapsed

    def row(self) -> str:
        s = self.stats
        learned = f"{s.limit_rpm:.0f}/min from {s.limit_source}" if s is not None and s.limit_rpm else "-"
        share = 100 * self.refused / self.requests
        late = "-" if self.refused_after_headers is None else str(self.refused_after_headers)
        return (f"{self.name:<46} {self.requests:>6} {self.refused:>5} {share:>6.1f}% {late:>5} {self.elapsed:>8.1f} "
                f"{self.elapsed / self.ideal:>6.3f} {100 * self.used:>5.1f}%  {learned}")  # fmt: skip


def simulate(
    name: str,
    n: int,
    *,
    server_rpm: float,
    server_burst: float,
    advertise: bool = True,
    rpm: float | None = None,
    workers: int = 16,
    latency: float = 1.5,
    governed: bool = True,
    seed: int = 1,
    give_up_after: float = math.inf,
) -> Simulation:
    """``workers`` tasks synthesize ``n`` segments against a server bucket (``tests.fakeserver.RateBucket``,
    answering with its real headers, parsed by ``RateLimitInfo``) in virtual time. A 429 re-queues the segment.
    Ungoverned, a worker obeys retry-after to the millisecond, as a client that knows no limit does."""

    async def main() -> Simulation:
        loop = asyncio.get_running_loop()
        bucket = RateBucket(server_rpm, burst=server_burst, headers=advertise, clock=loop.time)
        governor = Governor(workers, rpm=rpm, clock=loop.time) if governed else None
        rng = random.Random(seed)
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        left, sent, refused, late = n, 0, 0, 0
        first_headers = math.inf

        async def ask() -> tuple[int, RateLimitInfo]:
            await asyncio.sleep(ONE_WAY)
            admission = bucket.admit("x" * 300)
            headers = dict(admission.headers)
            if admission.refused:
                headers["retry-after-ms"] = str(math.ceil(admission.retry_after * 1000))
                await asyncio.sleep(ONE_WAY)
                return 429, RateLimitInfo.from_headers(headers)
            await asyncio.sleep(latency * rng.uniform(0.6, 1.4) + ONE_WAY)  # synthesis takes its time
            return 200, RateLimitInfo.from_headers(headers)

        async def worker() -> None:
            nonlocal left, sent, refused, late, first_headers
            while (item := await queue.get()) is not None:
                if loop.time() > give_up_after:
                    break
                slot = await governor.acquire(300) if governor is not None else None
                released = loop.time()
                sent += 1
                status, info = await ask()
                if status == 429:
                    refused += 1
                    late += released > first_headers
                    queue.put_nowait(item)
                    if slot is not None:
                        slot.rate_limited(info.retry_after, info)
                    else:
                        await asyncio.sleep(info.retry_after or 1.0)
                else:
                    left -= 1
                    if slot is not None:
                        slot.done(info)
                if info.limit_requests is not None:
                    first_headers = min(first_headers, loop.time())
                if left == 0:
                    for _ in range(workers):
                        queue.put_nowait(None)
            for _ in range(workers):  # gave up: stop the others too
                queue.put_nowait(None)

        await asyncio.gather(*(worker() for _ in range(workers)))
        stats = governor.stats() if governor is not None else None
        late_or_none = late if first_headers < math.inf else None
        return Simulation(name, sent, refused, late_or_none, loop.time(), (n - left) / (server_rpm / 60), stats)

    return run_virtual(main)


def test_simulation_configured_60_rpm_against_a_burst_of_5() -> None:
    run = simulate("60/min burst 5, rpm=60 configured, no headers", 300, server_rpm=60, server_burst=5,
                   advertise=False, rpm=60)  # fmt: skip
    assert run.refused <= 0.03 * run.requests and run.elapsed <= 1.15 * run.ideal


def test_simulation_60_rpm_learned_from_headers() -> None:
    # Knowing nothing, the first 16 go at once and 11 are refused: the server's burst is 5. That first wave is
    # the only one: nothing sent after the first headers is refused.
    run = simulate("60/min burst 5, learned from headers", 600, server_rpm=60, server_burst=5)
    assert run.refused <= 0.03 * run.requests and run.elapsed <= 1.15 * run.ideal
    assert run.refused_after_headers == 0


def test_simulation_600_rpm_advertised_uses_the_limit_without_refusals() -> None:
    run = simulate("600/min burst 10, learned from headers", 3000, server_rpm=600, server_burst=10, latency=1.0)
    assert run.used >= 0.9 and run.refused_after_headers == 0
    assert run.stats is not None and run.stats.limit_source == "headers"


def test_simulation_an_unknown_limit_is_learned_from_429s() -> None:
    """No configuration, no headers: the governor only sees refusals. It must still end the 25:1 storm."""
    blind = simulate("120/min burst 5, unknown (429s only)", 600, server_rpm=120, server_burst=5, advertise=False)
    assert blind.refused <= 0.1 * blind.requests and blind.elapsed <= 1.5 * blind.ideal


def test_simulation_first_contact_with_a_limit_only_in_the_headers() -> None:
    # 16 at once before any header was read: 11 of 87 refused (12.6 %). A first wave of 4, then the pace.
    run = simulate("120/min burst 5, advertised, first contact", 76, server_rpm=120, server_burst=5)
    assert run.refused <= 0.03 * run.requests and run.elapsed <= 1.05 * run.ideal


def test_simulation_ungoverned_clients_storm_the_server() -> None:
    """Today's client for comparison: no pacing, retry-after obeyed exactly. It barely gets through."""
    storm = simulate("120/min burst 5, no governor (today)", 600, server_rpm=120, server_burst=5, advertise=False,
                     governed=False, give_up_after=600.0)  # fmt: skip
    assert storm.refused > 5 * (storm.requests - storm.refused)


SCENARIOS: list[Callable[[], Simulation]] = [
    lambda: simulate("60/min burst 5, rpm=60 configured, no headers", 300, server_rpm=60, server_burst=5,
                     advertise=False, rpm=60),
    lambda: simulate("60/min burst 5, learned from headers", 600, server_rpm=60, server_burst=5),
    lambda: simulate("60/min burst 1, learned from headers", 600, server_rpm=60, server_burst=1),
    lambda: simulate("120/min burst 5, advertised, first contact", 76, server_rpm=120, server_burst=5),
    lambda: simulate("600/min burst 10, learned from headers", 3000, server_rpm=600, server_burst=10, latency=1.0),
    lambda: simulate("600/min burst 600 (OpenAI's), from headers", 3000, server_rpm=600, server_burst=600,
                     latency=1.0),
    lambda: simulate("60/min burst 5, rpm=120 configured (wrong)", 300, server_rpm=60, server_burst=5,
                     advertise=False, rpm=120),
    lambda: simulate("120/min burst 5, unknown (429s only)", 600, server_rpm=120, server_burst=5, advertise=False),
    lambda: simulate("500/min burst 10, unknown (429s only)", 3000, server_rpm=500, server_burst=10,
                     advertise=False, latency=1.0),
    lambda: simulate("120/min burst 5, no governor (today)", 600, server_rpm=120, server_burst=5, advertise=False,
                     governed=False, give_up_after=600.0),
]  # fmt: skip


if __name__ == "__main__":
    print(f"{'scenario (16 workers, N segments = sent - 429s)':<46} {'sent':>6} {'429s':>5} {'share':>7} {'late':>5} "
          f"{'time s':>8} {'/ideal':>6} {'used':>6}  limit at the end")  # fmt: skip
    print("late: 429s of requests sent after the first rate-limit headers were read; ideal: N / the server's rate")
    for scenario in SCENARIOS:
        print(scenario().row())


def test_remembered_limits_are_recent_and_never_fail_a_run(tmp_path: Path) -> None:
    path = tmp_path / "rate-limits.json"
    assert recall(path, "openai:api.example/v1 key:abc") is None  # no file yet
    remember(path, {"openai:api.example/v1 key:abc": 500.0}, now=1000.0)
    remember(path, {"openai:other/v1 key:def": 60.0}, now=1000.0 + 86400)
    assert recall(path, "openai:api.example/v1 key:abc", now=1000.0 + 3600) == 500.0
    assert recall(path, "openai:api.example/v1 key:abc", now=1000.0 + 8 * 86400) is None  # a tier may change
    assert recall(path, "openai:other/v1 key:def", now=1000.0 + 2 * 86400) == 60.0  # both kept
    for junk in ("", "[]", '{"openai:api.example/v1 key:abc": {"rpm": "fast"}}', "\x00\x01"):
        path.write_text(junk, encoding="utf-8")
        assert recall(path, "openai:api.example/v1 key:abc") is None


def test_a_remembered_limit_paces_until_the_headers_speak() -> None:
    clock = FakeClock()
    governor = Governor(8, clock=clock, sleep=clock.sleep, remembered_rpm=600)
    assert governor.stats().limit_rpm == 600 and governor.stats().limit_source == "an earlier run's headers"
    assert governor.learned_rpm is None  # nothing new to remember yet

    async def run() -> None:
        (await governor.acquire()).done(RateLimitInfo(limit_requests=300, remaining_requests=299))

    asyncio.run(run())
    assert (governor.stats().limit_rpm, governor.stats().limit_source) == (300, "headers")
    assert governor.learned_rpm == 300
