"""Time as an injectable dependency, so that tests of timing never sleep for real."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """What the limiter, the backoff and the engine need of time."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Pause the calling task."""
        ...


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time for tests: `sleep` moves the clock to the sleeper's wake-up time instead
    of waiting. Sleepers that overlap do not add up: two tasks sleeping 5 s from the same
    moment both wake at +5 s."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        wake = self._now + seconds
        await anyio.lowlevel.checkpoint()
        self._now = max(self._now, wake)
