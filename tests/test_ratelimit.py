"""The shared limiter on a fake clock: spacing, the per-second cap, 429 pause and AIMD."""

from __future__ import annotations

import itertools

import pytest

from bulkusers.clock import FakeClock
from bulkusers.ratelimit import RateLimiter

pytestmark = pytest.mark.anyio


async def send_times(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await limiter.acquire()
        times.append(clock.now())
    return times


def busiest_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


async def test_requests_are_spaced_evenly() -> None:
    """At 10 req/s the slots are 0.1 s apart and no second holds more than 10."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=10, clock=clock)
    times = await send_times(limiter, clock, 50)
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}
    assert busiest_second(times) == 10


async def test_unlimited_rate_never_waits() -> None:
    """--rate 0 hands out slots at once."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=0, clock=clock)
    times = await send_times(limiter, clock, 100)
    assert times == [0.0] * 100
    assert clock.slept == []


async def test_idle_time_does_not_build_a_burst() -> None:
    """After a quiet spell the limiter does not release a burst above the rate."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=5, clock=clock)
    await send_times(limiter, clock, 3)
    clock.advance(30)
    times = await send_times(limiter, clock, 20)
    assert busiest_second(times) <= 5


async def test_429_pauses_everyone_and_halves_the_rate() -> None:
    """A 429 with Retry-After 2 pauses all slots 2 s and halves the rate."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=10, clock=clock)
    await send_times(limiter, clock, 5)
    paused_at = clock.now()
    assert limiter.throttled(2.0) == 2.0
    await limiter.acquire()
    assert clock.now() >= paused_at + 2.0
    assert limiter.rate <= 5.0 + 0.5 * 2.2
    stats = limiter.stats()
    assert stats.throttled == 1
    assert stats.throttle_wait == pytest.approx(2.0)
    assert stats.lowest_rate == 5.0


async def test_rate_climbs_back_additively() -> None:
    """After a cut the rate climbs 0.5 req/s per second back to the configured rate."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=10, clock=clock)
    limiter.throttled(None)
    assert limiter.rate == 5.0
    clock.advance(1.0 + 4.0)
    await limiter.acquire()
    assert limiter.rate == pytest.approx(7.0)
    clock.advance(100)
    await limiter.acquire()
    assert limiter.rate == 10.0


async def test_a_burst_of_429s_cuts_once_per_interval() -> None:
    """Eight workers seeing the same 429 cut the rate once, not eight times."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=16, clock=clock)
    for _ in range(8):
        limiter.throttled(1.0)
    assert limiter.rate == 8.0


async def test_rate_never_falls_below_the_floor() -> None:
    """However many 429s, the rate stays at or above the floor."""
    clock = FakeClock(start=0.0)
    limiter = RateLimiter(rate=4, clock=clock, min_rate=1.0)
    for _ in range(20):
        limiter.throttled(0.5)
        clock.advance(1.0)
    assert limiter.rate == 1.0
