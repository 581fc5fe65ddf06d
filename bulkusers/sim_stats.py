"""What the simulator saw, counted cheaply per request so benchmarks can check the client's pace."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Any

#: Width of the windows that `max_per_second` and `per_second` count in.
WINDOW_SECONDS = 1.0


class SimStats:
    """Counters of Users-API calls, tokens and lookups; `to_dict()` is what `/_sim/stats` serves."""

    def __init__(self) -> None:
        self.requests = 0
        self.gets = 0
        self.puts = 0  # PUT and POST with X-HTTP-Method-Override: PUT
        self.puts_applied = 0  # accepted PUTs, including those whose answer was then lost
        self.conflicts = 0  # 409
        self.precondition_required = 0  # 428
        self.throttled = 0  # 429
        self.server_errors = 0  # 5xx
        self.drops = 0  # connection closed before anything was applied
        self.lost_puts = 0  # PUT applied, then the connection closed unanswered
        self.hangs = 0  # scripted answers that never came
        self.tokens_issued = 0
        self.tokens_refused = 0
        self.other_admin_edits = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_version: Counter[str] = Counter()
        self.by_method_override: Counter[str] = Counter()
        self.auth_schemes: Counter[str] = Counter()
        self.domain_lookups: Counter[str] = Counter()
        # array('d') keeps ~100k arrivals in under a megabyte, unlike a list of float objects.
        self.arrivals: array[float] = array("d")
        self.throttled_arrivals: array[float] = array("d")

    def count_status(self, status: int, arrived: float) -> None:
        """Count one answer the client will see, by status and by the totals that matter."""
        self.by_status[status] += 1
        if status == 409:
            self.conflicts += 1
        elif status == 428:
            self.precondition_required += 1
        elif status == 429:
            self.throttled += 1
            self.throttled_arrivals.append(arrived)
        elif status >= 500:
            self.server_errors += 1

    @property
    def max_per_second(self) -> int:
        """The most Users-API requests that arrived within any one-second sliding window."""
        return max_in_window(self.arrivals, WINDOW_SECONDS)

    @property
    def per_second(self) -> list[int]:
        """Users-API arrivals per consecutive one-second bucket since the first request."""
        return bucket_counts(self.arrivals, self._origin(), WINDOW_SECONDS)

    @property
    def per_second_429(self) -> list[int]:
        """429 answers per bucket, aligned with `per_second` (same origin, same length)."""
        counts = bucket_counts(self.throttled_arrivals, self._origin(), WINDOW_SECONDS)
        return counts + [0] * (len(self.per_second) - len(counts))

    def _origin(self) -> float:
        return min(self.arrivals) if self.arrivals else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able view served at `/_sim/stats` (status keys become strings)."""
        return {
            "requests": self.requests,
            "gets": self.gets,
            "puts": self.puts,
            "puts_applied": self.puts_applied,
            "conflicts": self.conflicts,
            "precondition_required": self.precondition_required,
            "throttled": self.throttled,
            "server_errors": self.server_errors,
            "drops": self.drops,
            "lost_puts": self.lost_puts,
            "hangs": self.hangs,
            "tokens_issued": self.tokens_issued,
            "tokens_refused": self.tokens_refused,
            "other_admin_edits": self.other_admin_edits,
            "by_method": dict(self.by_method),
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "by_version": dict(self.by_version),
            "by_method_override": dict(self.by_method_override),
            "auth_schemes": dict(self.auth_schemes),
            "domain_lookups": dict(self.domain_lookups),
            "max_per_second": self.max_per_second,
            "per_second": self.per_second,
            "per_second_429": self.per_second_429,
        }


def max_in_window(times: Sequence[float], window: float) -> int:
    """Most events in any half-open interval (t - window, t]: two pointers over sorted times."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def bucket_counts(times: Sequence[float], origin: float, width: float) -> list[int]:
    """Counts of events per consecutive bucket [origin + k*width, origin + (k+1)*width)."""
    if not times:
        return []
    counts: list[int] = []
    for t in times:
        index = max(0, int((t - origin) // width))
        if index >= len(counts):
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1
    return counts
