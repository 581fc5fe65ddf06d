"""The bulk-update engine: a producer streams rows into a bounded stream, workers run
GET-merge-PUT with If-Match under one shared rate limiter, a reporter journals each outcome.

One task group. A failed row is a value (a RowResult); only what ends the whole run
(credentials refused, the journal unwritable, a hard stop) raises.
"""

from __future__ import annotations

import collections
import enum
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulkusers.changes import Change, InvalidRow
from bulkusers.classify import Verdict, classify, server_message
from bulkusers.client import Reply, UsersApi
from bulkusers.clock import Clock
from bulkusers.errors import AuthRefused, JournalFailed, OutageTooLong, RunStopped
from bulkusers.health import HealthGate, Ride
from bulkusers.merge import merge, role_warnings
from bulkusers.ratelimit import RateLimiter
from bulkusers.results import Outcome, RowResult
from bulkusers.schema import SECRET_ATTRIBUTES

log = structlog.get_logger("bulkusers.engine")

DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_ATTEMPTS = 5
#: LivePerson's retry policy for 5xx / timeouts / dropped connections: 3 retries, 5/10/15 s.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5.0, 10.0, 15.0)
#: Backoff between conflict attempts: base * 2**n, capped, with full jitter.
DEFAULT_CONFLICT_BACKOFF = 0.2
DEFAULT_CONFLICT_BACKOFF_MAX = 5.0
#: A row gives up after this many 429s in a row on one request (each one waited out).
DEFAULT_MAX_THROTTLE_WAITS = 30
#: How long the API may stay down before the run stops (exit 3, resumable).
DEFAULT_MAX_OUTAGE = 600.0
#: This many 403s in a row, with nothing else in between, stop the run (exit 3).
FORBIDDEN_STREAK_STOP = 10
#: Jitter applied to retry delays (fraction of the delay, both ways).
RETRY_JITTER = 0.1


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The engine's knobs; the CLI builds one from the command line."""

    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    conflict_backoff: float = DEFAULT_CONFLICT_BACKOFF
    conflict_backoff_max: float = DEFAULT_CONFLICT_BACKOFF_MAX
    max_throttle_waits: int = DEFAULT_MAX_THROTTLE_WAITS
    max_outage: float = DEFAULT_MAX_OUTAGE
    dry_run: bool = False


class StopReason(enum.Enum):
    """Why the run stopped taking rows."""

    AUTH = "the server refused the credentials"
    INTERRUPTED = "interrupted"
    FORBIDDEN = "the server refused every request (403)"
    OUTAGE = "the API stayed down"
    JOURNAL = "the results file stopped accepting writes"


@dataclass
class Counters:
    """Run-wide tallies for the summary."""

    gets: int = 0
    puts: int = 0
    retries: int = 0
    conflicts: int = 0
    throttled: int = 0
    outcomes: collections.Counter[Outcome] = field(default_factory=collections.Counter)

    @property
    def requests(self) -> int:
        """Every request sent, GETs and PUTs (retries included)."""
        return self.gets + self.puts


Reporter = Callable[[RowResult], None]


@dataclass(slots=True)
class _Work:
    change: Change
    after: anyio.Event | None  # the previous row for the same user must settle first
    done: anyio.Event


@dataclass(slots=True)
class _RowState:
    """Per-row budgets and what the row has seen so far."""

    change: Change
    transient_left: list[float]
    attempts: int = 0
    status: int | None = None
    revision_before: str | None = None
    last_problem: str = ""
    probe: bool = False  # the health gate let this row's next request through
    reread: bool = False  # the last GET failed transiently: the next one continues the attempt
    in_doubt: tuple[str, ...] = ()  # what a PUT whose answer was lost would have changed
    verify_only: bool = False  # retries are spent: read once more, never PUT again
    conflicted_on: dict[str, Any] | None = None  # the entity a refused PUT was based on


class Engine:
    """Runs one changes file against one Users API."""

    def __init__(
        self,
        api: UsersApi,
        *,
        settings: EngineSettings,
        limiter: RateLimiter,
        clock: Clock,
        health: HealthGate | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._api = api
        self._health = health or HealthGate(
            clock=clock, probe_delays=settings.retry_delays, max_outage=settings.max_outage
        )
        self._settings = settings
        self._limiter = limiter
        self._clock = clock
        self._rng = rng or random.Random()
        self.counters = Counters()
        self._stop: StopReason | None = None
        self._stop_message = ""
        self._last_for_user: dict[int, anyio.Event] = {}
        self._serial: anyio.Lock | None = None  # set once revisions look account-wide
        self._row_scopes: set[anyio.CancelScope] = set()
        self._forbidden = {"GET": 0, "PUT": 0}  # 403s in a row, by method, across workers
        self._last_good_user: int | None = None  # a user the API last read fine (outage probes)
        self._fatal: RunStopped | None = None

    @property
    def stopped(self) -> StopReason | None:
        return self._stop

    @property
    def stop_message(self) -> str:
        return self._stop_message

    def hard_stop(self) -> None:
        """Cut off the rows in flight now; they end `skipped` (a PUT already sent may have
        been applied: --resume reads the user again and finds it `unchanged`)."""
        self.request_stop(StopReason.INTERRUPTED)
        for scope in self._row_scopes:
            scope.cancel()

    def request_stop(self, reason: StopReason, message: str = "") -> None:
        """Take no new rows; rows not yet tried end `skipped`."""
        if self._stop is None:
            self._stop = reason
            self._stop_message = message or reason.value
            log.warning("run_stopping", reason=self._stop_message)

    async def run(
        self,
        rows: Iterable[Change | InvalidRow],
        report: Reporter,
        *,
        skip_rows: frozenset[int] = frozenset(),
    ) -> Counters:
        """Process every row; `report` is called once per row not in `skip_rows`, in
        settle order. Raises AuthRefused if the credentials were refused."""
        concurrency = self._settings.concurrency
        work_send, work_recv = anyio.create_memory_object_stream[_Work](concurrency)
        result_send, result_recv = anyio.create_memory_object_stream[RowResult](concurrency * 2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reporter, result_recv, report, tg.cancel_scope)
            async with work_recv, result_send:
                tg.start_soon(self._producer, rows, skip_rows, work_send, result_send.clone())
                for _ in range(concurrency):
                    tg.start_soon(self._worker, work_recv.clone(), result_send.clone())
        if self._fatal is not None:
            raise self._fatal
        if self._stop in (StopReason.AUTH, StopReason.FORBIDDEN):
            raise AuthRefused(self._stop_message)
        return self.counters

    async def _producer(
        self,
        rows: Iterable[Change | InvalidRow],
        skip_rows: frozenset[int],
        work: MemoryObjectSendStream[_Work],
        results: MemoryObjectSendStream[RowResult],
    ) -> None:
        async with work, results:
            for item in rows:
                if item.row in skip_rows:
                    continue
                if isinstance(item, InvalidRow):
                    await _send(
                        results,
                        RowResult(
                            row=item.row,
                            id=item.raw_id,
                            outcome=Outcome.INVALID,
                            error=item.message,
                        ),
                    )
                    continue
                if self._stop is not None:
                    await _send(results, self._skipped(item))
                    continue
                done = anyio.Event()
                after = self._last_for_user.get(item.user_id)
                self._last_for_user[item.user_id] = done
                await _send(work, _Work(change=item, after=after, done=done))

    async def _worker(
        self, work: MemoryObjectReceiveStream[_Work], results: MemoryObjectSendStream[RowResult]
    ) -> None:
        async with work, results:
            while (item := await _receive(work)) is not None:
                if item.after is not None:
                    await item.after.wait()
                change = item.change
                result = None
                row = _RowState(change=change, transient_left=list(self._settings.retry_delays))
                if self._stop is None:
                    with anyio.CancelScope() as scope:
                        self._row_scopes.add(scope)
                        try:
                            result = await self._process(row)
                        finally:
                            self._row_scopes.discard(scope)
                if result is None:
                    result = self._cut_off(row)
                item.done.set()
                if self._last_for_user.get(change.user_id) is item.done:
                    del self._last_for_user[change.user_id]
                await _send(results, result)

    async def _reporter(
        self,
        results: MemoryObjectReceiveStream[RowResult],
        report: Reporter,
        run: anyio.CancelScope,
    ) -> None:
        async with results:
            while (result := await _receive(results)) is not None:
                try:
                    report(result)
                except OSError as exc:
                    # Nothing more can be recorded: stop everything, the journal stays valid
                    # up to the last complete line.
                    self._fatal = JournalFailed(
                        f"writing the results file failed: {exc.strerror or exc}; "
                        "free the disk and run again with --resume"
                    )
                    self.request_stop(StopReason.JOURNAL, str(self._fatal))
                    run.cancel()
                    return
                self.counters.outcomes[result.outcome] += 1

    def _skipped(self, change: Change) -> RowResult:
        return RowResult(
            row=change.row,
            id=str(change.user_id),
            outcome=Outcome.SKIPPED,
            error=f"not tried: the run stopped ({self._stop_message})",
        )

    def _cut_off(self, row: _RowState) -> RowResult:
        """A row the stop reached first, or cut off mid-flight. If a PUT of it went out
        unanswered, say so: it may have landed, and --resume will read the user again."""
        if not row.in_doubt:
            return self._skipped(row.change)
        return self._result(
            row,
            Outcome.SKIPPED,
            changed=row.in_doubt,
            error=f"the run stopped ({self._stop_message}) while a PUT of this row was "
            "unanswered: it may have been applied; --resume reads the user again",
        )

    # -- one row -----------------------------------------------------------------------------

    async def _process(self, row: _RowState) -> RowResult:
        """GET-merge-PUT with If-Match until done, a final answer, or the budgets run out.
        Pauses (backoff, retry delays, outages) happen here, never inside the serial lock."""
        while True:
            if self._health.in_outage and not row.probe:
                await self._ride_out(row)
            lock = self._serial
            if lock is None:
                step = await self._attempt(row)
            else:
                async with lock:
                    step = await self._attempt(row)
            if isinstance(step, RowResult):
                return step
            await self._clock.sleep(step)

    async def _attempt(self, row: _RowState) -> RowResult | float:
        """One GET-merge-PUT; returns the row's result, or the pause before the next attempt."""
        settings = self._settings
        uid = row.change.user_id
        if not row.reread:
            row.attempts += 1
        row.reread = False
        got = await self._call(row, lambda: self._api.get_user(uid), put=False)
        if self._verdict(got) is Verdict.TRANSIENT:
            row.reread = True  # reading again is part of the same attempt
            return self._transient_pause(row, got)
        final = self._final(row, got)
        if final is not None:
            return final
        entity, revision = got.entity, got.revision
        assert entity is not None, "_final checked the answer"
        assert revision is not None, "_final checked the answer"
        if row.revision_before is None:
            row.revision_before = revision
        self._last_good_user = uid
        if row.conflicted_on is not None and entity == row.conflicted_on:
            self._suspect_collection_revision(uid)
        merged = merge(entity, row.change)
        if not merged.changed:
            if row.in_doubt:
                return self._result(
                    row,
                    Outcome.UPDATED,
                    changed=row.in_doubt,
                    revision_after=revision,
                    error="the PUT's answer was lost; a fresh read shows the change in place",
                )
            return self._result(row, Outcome.UNCHANGED, revision_after=revision)
        warnings = "; ".join(role_warnings(entity, merged.entity))
        if settings.dry_run:
            return self._result(row, Outcome.WOULD_UPDATE, changed=merged.changed, error=warnings)
        if row.verify_only:
            return self._result(row, Outcome.FAILED, error=row.last_problem)
        row.in_doubt = merged.changed  # from here until an answer, the PUT may have landed
        put = await self._call(
            row, lambda: self._api.put_user(uid, merged.entity, revision), put=True
        )
        verdict = self._verdict(put)
        if verdict is Verdict.TRANSIENT:
            # The PUT may or may not have been applied: never re-PUT blindly, read again.
            row.conflicted_on = None
            pause = self._transient_pause(row, put)
            if isinstance(pause, RowResult) or row.attempts >= settings.max_attempts:
                row.verify_only = True  # one last read decides between updated and failed
                row.reread = True  # ... and it is part of this attempt, not a new one
                return 0.0
            return pause
        row.in_doubt = ()
        if verdict is Verdict.OK:
            return self._result(
                row,
                Outcome.UPDATED,
                changed=merged.changed,
                revision_after=put.revision,
                error=warnings,
            )
        if verdict is Verdict.CONFLICT:
            self.counters.conflicts += 1
            row.conflicted_on = entity
            row.last_problem = f"revision {revision} was stale (HTTP {put.status})"
            if row.attempts >= settings.max_attempts:
                return self._result(
                    row,
                    Outcome.CONFLICT,
                    error=f"gave up after {row.attempts} attempts: {row.last_problem}",
                )
            return self._conflict_delay(row.attempts)
        final = self._final(row, put)
        assert final is not None
        return final

    def _suspect_collection_revision(self, user_id: int) -> None:
        """A conflict although nobody changed this user: the server checks If-Match against
        the account-wide revision, so concurrent writes only collide. Write one at a time."""
        if self._serial is None:
            self._serial = anyio.Lock()
            log.warning(
                "serial_writes",
                user_id=user_id,
                reason="conflict without a change to the user: the server appears to check "
                "revisions account-wide; writing one user at a time from now on",
            )

    def _verdict(self, reply: Reply) -> Verdict:
        if reply.status is None:
            return Verdict.TRANSIENT
        verdict = classify(reply.status)
        if verdict is Verdict.OK and reply.problem is not None:
            return Verdict.TRANSIENT
        return verdict

    def _final(self, row: _RowState, reply: Reply) -> RowResult | None:
        """The row's outcome if this answer ends it; None if it may go on."""
        verdict = self._verdict(reply)
        if verdict is Verdict.OK:
            return None
        error = self._scrub(row, reply.problem or server_message(reply.status or 0, reply.body))
        final_outcome = _FINAL_OUTCOMES[verdict]
        if verdict is Verdict.UNAUTHORIZED:
            self.request_stop(StopReason.AUTH, error)
            return self._cut_off(row)
        if reply.status == 403:
            streak = max(self._forbidden.values())
            if streak >= FORBIDDEN_STREAK_STOP:
                # Every GET (or every PUT) refused: the credential lacks a scope, not this row
                # a right (a read-only credential reads fine and is refused every write).
                self.request_stop(
                    StopReason.FORBIDDEN,
                    f"{error} on {streak} requests in a row: the credential "
                    "seems to lack the users.read / users.write scopes",
                )
                return self._cut_off(row)
        if row.in_doubt:
            error = f"{error}; {_IN_DOUBT}"
            return self._result(row, final_outcome, changed=row.in_doubt, error=error)
        return self._result(row, final_outcome, error=error)

    def _result(
        self,
        row: _RowState,
        outcome: Outcome,
        *,
        changed: tuple[str, ...] = (),
        revision_after: str | None = None,
        error: str = "",
    ) -> RowResult:
        return RowResult(
            row=row.change.row,
            id=str(row.change.user_id),
            outcome=outcome,
            http_status=row.status,
            attempts=row.attempts,
            revision_before=row.revision_before,
            revision_after=revision_after,
            changed=changed,
            error=self._scrub(row, error),
        )

    @staticmethod
    def _scrub(row: _RowState, text: str) -> str:
        """Mask the row's own secret values (passwordSh) in a message a server may have
        echoed them into."""
        for edit in row.change.edits:
            if edit.attribute in SECRET_ATTRIBUTES and isinstance(edit.value, str) and edit.value:
                text = text.replace(edit.value, "[redacted]")
        return text

    async def _call(
        self, row: _RowState, send: Callable[[], Awaitable[Reply]], *, put: bool
    ) -> Reply:
        """Send one request under the rate limit, waiting out 429s (bounded); the answer."""
        throttle_waits = 0
        counters = self.counters
        while True:
            await self._limiter.acquire()
            if put:
                counters.puts += 1
            else:
                counters.gets += 1
            row.probe = False
            reply = await send()
            row.status = reply.status
            method = "PUT" if put else "GET"
            self._forbidden[method] = self._forbidden[method] + 1 if reply.status == 403 else 0
            verdict = self._verdict(reply)
            self._health.record(verdict is not Verdict.TRANSIENT)
            if verdict is not Verdict.THROTTLED:
                return reply
            counters.throttled += 1
            self._limiter.throttled(reply.retry_after)
            throttle_waits += 1
            if throttle_waits > self._settings.max_throttle_waits:
                row.last_problem = f"still HTTP 429 after {throttle_waits} waits"
                return reply
            # acquire() waits out the pause, for every worker

    def _transient_pause(self, row: _RowState, reply: Reply) -> RowResult | float:
        """A request failed with 5xx / timeout / dropped connection: the pause before the row
        goes on, or its `failed` result when its retries are spent. During an outage the
        row's budget is left alone: the health gate decides when to go on."""
        row.last_problem = reply.problem or server_message(reply.status or 0, reply.body)
        if self._health.in_outage:
            return 0.0  # _process rides the outage out before the next attempt
        delay = self._take_retry(row)
        if delay is None:
            if row.in_doubt:
                return self._result(
                    row,
                    Outcome.FAILED,
                    changed=row.in_doubt,
                    error=f"{row.last_problem}; {_IN_DOUBT}",
                )
            return self._result(row, Outcome.FAILED, error=row.last_problem)
        return delay

    async def _ride_out(self, row: _RowState) -> None:
        """Wait out an outage; stop the whole run if it outlasts --max-outage.

        The probe reads a user the API last served fine, not this row's user: a block of
        rows whose own users always fail must not pass for an outage that never ends."""
        while (ride := await self._health.ride_out()) is Ride.SEND:
            if not self._health.in_outage:
                return  # recovered while this row waited
            probe_user = self._last_good_user
            if probe_user is None or probe_user == row.change.user_id:
                row.probe = True  # nothing else known to be good: this row's request probes
                return
            await self._limiter.acquire()
            self.counters.gets += 1
            reply = await self._api.get_user(probe_user)
            self._health.record(self._verdict(reply) is not Verdict.TRANSIENT)
            if not self._health.in_outage:
                return
        assert ride is Ride.GIVE_UP
        if self._fatal is None:
            self._fatal = OutageTooLong(
                f"the API kept failing for {self._settings.max_outage:g} s (--max-outage): "
                f"{self._scrub(row, row.last_problem) or 'no answer'}"
            )
            self.request_stop(StopReason.OUTAGE, str(self._fatal))
            self.hard_stop()
        await anyio.lowlevel.checkpoint()  # this row's scope is cancelled: it ends skipped
        raise AssertionError("unreachable: the hard stop cancelled this row")  # pragma: no cover

    def _take_retry(self, row: _RowState) -> float | None:
        """Use one transient retry of the row's budget: the delay to wait, or None if spent."""
        if not row.transient_left:
            return None
        self.counters.retries += 1
        delay = row.transient_left.pop(0)
        return delay * (1 + self._rng.uniform(-RETRY_JITTER, RETRY_JITTER))

    def _conflict_delay(self, attempt: int) -> float:
        settings = self._settings
        ceiling = min(settings.conflict_backoff_max, settings.conflict_backoff * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)


T = TypeVar("T")

#: Added to the error of a row that ends without knowing whether its last PUT landed.
_IN_DOUBT = "a PUT of this row went unanswered and may have been applied"


async def _send(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send without a trip round the event loop when there is room (profiled: about 100 µs
    of client CPU per update at full speed went to those trips)."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)
    except anyio.BrokenResourceError:
        # The reporter is gone because the run is being cancelled (journal failure): take
        # the cancellation here rather than report a broken stream. Otherwise it is a bug.
        await anyio.lowlevel.checkpoint()
        raise


async def _receive(stream: MemoryObjectReceiveStream[T]) -> T | None:
    """The next item (without a trip round the event loop if one is waiting), or None once
    every sender has closed."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        pass
    except anyio.EndOfStream:
        return None
    try:
        return await stream.receive()
    except anyio.EndOfStream:
        return None


#: Outcome of a row whose answer ends it, by verdict.
_FINAL_OUTCOMES = {
    Verdict.UNAUTHORIZED: Outcome.SKIPPED,
    Verdict.NOT_FOUND: Outcome.NOT_FOUND,
    Verdict.REJECTED: Outcome.REJECTED,
    Verdict.CONFLICT: Outcome.CONFLICT,
    Verdict.TRANSIENT: Outcome.FAILED,
    Verdict.THROTTLED: Outcome.FAILED,
}

__all__ = ["Counters", "Engine", "EngineSettings", "RunStopped", "StopReason"]
