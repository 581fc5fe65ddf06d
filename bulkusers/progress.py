"""The live progress display on stderr: done/total, rate, ETA and counts by outcome."""

from __future__ import annotations

import collections
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bulkusers.results import Outcome, RowResult

#: Outcome counts shown on the bar, in this order (zero counts are hidden).
_SHOWN = (
    Outcome.UPDATED,
    Outcome.UNCHANGED,
    Outcome.WOULD_UPDATE,
    Outcome.INVALID,
    Outcome.NOT_FOUND,
    Outcome.REJECTED,
    Outcome.CONFLICT,
    Outcome.FAILED,
    Outcome.SKIPPED,
)


class ProgressDisplay:
    """A rich progress bar; log lines written to stderr while it is live appear above it."""

    def __init__(
        self, *, total: int | None, already: int = 0, console: Console | None = None
    ) -> None:
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=self._console,
            redirect_stderr=True,
            redirect_stdout=False,
            refresh_per_second=4,
        )
        self._task: TaskID = self._progress.add_task(
            "rows", total=total, completed=already, rate="", counts=""
        )
        self._counts: collections.Counter[Outcome] = collections.Counter()
        self._pending = 0
        self._last_flush = 0.0

    def __enter__(self) -> ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._flush()
        self._progress.stop()

    def settled(self, result: RowResult) -> None:
        """Count one settled row (cheap: the bar redraws on its own timer)."""
        self._counts[result.outcome] += 1
        self._pending += 1
        now = time.monotonic()
        if now - self._last_flush >= 0.2:
            self._last_flush = now
            self._flush()

    def _flush(self) -> None:
        task = self._progress.tasks[0]
        speed = task.speed
        rate = f"{speed:.1f} rows/s" if speed else ""
        counts = " ".join(f"{o.value} {self._counts[o]}" for o in _SHOWN if self._counts[o])
        self._progress.update(self._task, advance=self._pending, rate=rate, counts=counts)
        self._pending = 0
