"""Telling a bad hour from a bad row: when most recent requests fail with 5xx or dropped
connections, every worker pauses and one probe at a time tests the API, with backoff,
instead of burning through rows as `failed`."""

from __future__ import annotations

import collections
import enum

import anyio
import structlog

from bulkusers.clock import Clock

log = structlog.get_logger("bulkusers.health")

#: How many recent requests the outage judgement looks at.
DEFAULT_WINDOW = 20
#: The fewest recent requests to judge from.
DEFAULT_MIN_SAMPLES = 8
#: Fraction of recent requests that must have failed to call it an outage.
DEFAULT_THRESHOLD = 0.75
#: Longest pause between probes once the policy's delays are used up (they double).
DEFAULT_MAX_PROBE_DELAY = 60.0


class Ride(enum.Enum):
    """What a worker does after waiting on the gate."""

    SEND = "send"  # healthy again, or it is this worker's turn to probe
    GIVE_UP = "give_up"  # the outage outlasted --max-outage


class HealthGate:
    """Shared by all workers: records request outcomes and holds them during an outage."""

    def __init__(
        self,
        *,
        clock: Clock,
        probe_delays: tuple[float, ...],
        max_outage: float,
        window: int = DEFAULT_WINDOW,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        threshold: float = DEFAULT_THRESHOLD,
        max_probe_delay: float = DEFAULT_MAX_PROBE_DELAY,
    ) -> None:
        self._clock = clock
        self._delays = probe_delays or (1.0,)
        self._max_outage = max_outage
        self._recent: collections.deque[bool] = collections.deque(maxlen=window)
        self._failures = 0
        self._min_samples = min_samples
        self._threshold = threshold
        self._max_probe_delay = max_probe_delay
        self._since: float | None = None
        self._probes = 0
        self._probing = False
        self._changed = anyio.Event()
        self.outages = 0
        self.outage_seconds = 0.0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def record(self, ok: bool) -> None:
        """Count one answered (ok) or failed request; may start or end an outage."""
        recent = self._recent
        if len(recent) == recent.maxlen and not recent[0]:
            self._failures -= 1
        recent.append(ok)
        if not ok:
            self._failures += 1
        if self._probing and self._since is not None:
            self._probing = False  # the probe's answer (or a straggler's) is in
            self._wake()
        if ok and self._since is not None:
            self._end()
        elif (
            not ok
            and self._since is None
            and len(recent) >= self._min_samples
            and self._failures >= self._threshold * len(recent)
        ):
            self._begin()

    def _begin(self) -> None:
        self._since = self._clock.now()
        self._probes = 0
        self.outages += 1
        log.warning(
            "api_outage",
            failed=self._failures,
            of=len(self._recent),
            action="pausing every worker; probing the API with backoff",
        )

    def _end(self) -> None:
        assert self._since is not None
        lasted = self._clock.now() - self._since
        self.outage_seconds += lasted
        self._since = None
        self._recent.clear()
        self._failures = 0
        log.warning("api_recovered", after_seconds=round(lasted, 1), probes=self._probes)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _next_delay(self) -> float:
        if self._probes < len(self._delays):
            return self._delays[self._probes]
        doublings = min(self._probes - len(self._delays) + 1, 32)  # past 32 the cap rules
        grown = self._delays[-1] * 2.0**doublings
        return min(self._max_probe_delay, grown)

    async def ride_out(self) -> Ride:
        """Wait while the API is down. One worker at a time is sent back as the probe after
        the next backoff delay; the others wait until its answer is in."""
        while self._since is not None:
            if self._past_deadline():
                return Ride.GIVE_UP
            if self._probing:  # a probe is being prepared or is on the wire
                await self._changed.wait()
                continue
            self._probing = True
            delay = self._next_delay()
            self._probes += 1
            remaining = self._since + self._max_outage - self._clock.now()
            try:
                await self._clock.sleep(min(delay, remaining))
            except BaseException:
                self._probing = False
                self._wake()
                raise
            if self._since is not None and self._past_deadline():
                self._probing = False
                self._wake()
                return Ride.GIVE_UP
            return Ride.SEND  # the probe: `_probing` stays set until its answer is recorded
        return Ride.SEND

    def _past_deadline(self) -> bool:
        """Has the outage lasted --max-outage? (A microsecond early counts: sleeping exactly
        the remaining time can land a rounding error short of the deadline.)"""
        assert self._since is not None
        return self._clock.now() - self._since >= self._max_outage - 1e-6
