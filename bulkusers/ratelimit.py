"""One request-rate limiter shared by every worker: even spacing, a hard cap per second, and
additive-increase / multiplicative-decrease when the server answers 429."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

from bulkusers.clock import Clock

#: Never go below this many requests per second, however many 429s arrive.
DEFAULT_MIN_RATE = 0.5
#: After a 429, the rate climbs back by this many requests per second, each second.
DEFAULT_INCREASE_PER_SECOND = 0.5
#: A 429 halves the rate (at most once per `decrease_interval`).
DEFAULT_DECREASE_FACTOR = 0.5
#: Bound on how often one burst of 429s can cut the rate.
DEFAULT_DECREASE_INTERVAL = 1.0
#: Backoff when a 429 carries no usable Retry-After.
DEFAULT_THROTTLE_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """What the summary reports about rate limiting."""

    throttled: int  # 429s seen
    throttle_wait: float  # seconds during which every worker was paused by a 429
    effective_rate: float  # the rate in force at the end (req/s; 0 = unlimited)
    lowest_rate: float  # the lowest rate the limiter fell to


class RateLimiter:
    """Hands out request slots at most `rate` per second (0 = unlimited) to all workers.

    Slots are spaced 1/rate apart and no one-second window holds more than rate of them,
    so a server counting arrivals sees at most rate + 1 in any second even with jitter.
    """

    def __init__(
        self,
        *,
        rate: float,
        clock: Clock,
        min_rate: float = DEFAULT_MIN_RATE,
        increase_per_second: float = DEFAULT_INCREASE_PER_SECOND,
        decrease_factor: float = DEFAULT_DECREASE_FACTOR,
        decrease_interval: float = DEFAULT_DECREASE_INTERVAL,
        throttle_pause: float = DEFAULT_THROTTLE_PAUSE,
    ) -> None:
        self._clock = clock
        self._max_rate = rate
        self._rate = rate
        self._min_rate = min(min_rate, rate) if rate > 0 else min_rate
        self._increase = increase_per_second
        self._decrease_factor = decrease_factor
        self._decrease_interval = decrease_interval
        self._throttle_pause = throttle_pause
        self._next = clock.now()
        self._recent: collections.deque[float] = collections.deque()
        self._paused_until = -math.inf
        self._last_decrease = -math.inf
        self._last_increase = clock.now()
        self._throttled = 0
        self._throttle_wait = 0.0
        self._lowest = rate

    @property
    def rate(self) -> float:
        """The rate in force now (requests per second; 0 = unlimited)."""
        return self._rate

    def stats(self) -> LimiterStats:
        return LimiterStats(
            throttled=self._throttled,
            throttle_wait=self._throttle_wait,
            effective_rate=self._rate,
            lowest_rate=self._lowest,
        )

    async def acquire(self) -> None:
        """Wait for a slot to send one request."""
        clock = self._clock
        while True:
            now = clock.now()
            if now < self._paused_until:
                await clock.sleep(self._paused_until - now)
                continue
            if self._rate <= 0:
                return
            self._climb(now)
            slot = max(now, self._next, self._paused_until)
            cap = math.floor(self._rate) if self._rate >= 1 else 1
            recent = self._recent
            while recent and recent[0] <= slot - 1.0:
                recent.popleft()
            if len(recent) >= cap:
                slot = max(slot, recent[len(recent) - cap] + 1.0)
            self._next = slot + 1.0 / self._rate
            recent.append(slot)
            if slot <= now:
                return
            await clock.sleep(slot - now)
            if clock.now() >= self._paused_until:
                return
            # A 429 paused everyone while this task slept for its slot: wait it out too.

    def throttled(self, retry_after: float | None) -> float:
        """Record a 429: pause every worker, cut the rate; return the pause in seconds."""
        now = self._clock.now()
        self._throttled += 1
        pause = retry_after if retry_after is not None and retry_after > 0 else 0.0
        pause = pause or self._throttle_pause
        until = now + pause
        if until > self._paused_until:
            self._throttle_wait += until - max(now, self._paused_until)
            self._paused_until = until
        # With no rate configured there is nothing to cut: the pause alone slows everyone.
        if self._rate > 0 and now - self._last_decrease >= self._decrease_interval:
            self._last_decrease = now
            self._rate = max(self._min_rate, self._rate * self._decrease_factor)
            self._lowest = min(self._lowest, self._rate)
            self._last_increase = until
        return pause

    def _climb(self, now: float) -> None:
        """Additive increase back towards the configured rate after a cut."""
        if self._rate >= self._max_rate or now <= self._last_increase:
            return
        gained = self._increase * (now - self._last_increase)
        self._rate = min(self._max_rate, self._rate + gained)
        self._last_increase = now
