"""One `apply` run, wired: changes file -> engine -> journal, with signals, progress and the
closing summary."""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import anyio
import structlog

from bulkusers.changes import count_rows, fingerprint, open_changes
from bulkusers.client import HttpUsersApi, Transport, make_session
from bulkusers.clock import Clock, SystemClock
from bulkusers.connect import connect, refused_message, ssl_context
from bulkusers.engine import Counters, Engine, EngineSettings, StopReason
from bulkusers.errors import ResultsFileError, RunStopped
from bulkusers.progress import ProgressDisplay
from bulkusers.ratelimit import RateLimiter
from bulkusers.results import Outcome, ResultsJournal, RowResult, read_journal
from bulkusers.settings import ApplySettings

log = structlog.get_logger("bulkusers.apply")


@dataclass(frozen=True, slots=True)
class RunReport:
    """What the summary says and the exit code is decided from."""

    counters: Counters
    earlier: dict[Outcome, int]  # outcomes settled by an earlier run (--resume)
    elapsed: float
    stopped: str | None
    effective_rate: float
    throttle_wait: float

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return 3
        outcomes = [*self.counters.outcomes, *self.earlier]
        return 0 if all(o.is_success for o in outcomes) else 1


async def run_apply(
    settings: ApplySettings,
    *,
    out: TextIO = sys.stdout,
    clock: Clock | None = None,
) -> RunReport:
    """Run the changes file; raise UsageError (exit 2) before anything is sent if the input,
    the results path or the connection settings are unusable."""
    clock = clock or SystemClock()
    started = time.monotonic()
    changes = settings.changes
    with open_changes(changes) as reader:  # the header is checked here: exit 2 if unusable
        digest = fingerprint(changes)
        earlier: dict[int, RowResult] = {}
        if settings.resume:
            journal = read_journal(settings.results)
            if journal.fingerprint is not None and journal.fingerprint != digest:
                raise ResultsFileError(
                    f"--resume: {settings.results} was made from a different version of "
                    f"{changes} (the file changed since); use a new --results path"
                )
            earlier = journal.settled
        sink = ResultsJournal(settings.results, clock=clock)
        sink.start(
            keep=sorted(earlier.values(), key=lambda r: r.row), fingerprint=digest, changes=changes
        )
        try:
            total = count_rows(changes)
            transport = Transport(
                api_version=settings.api_version,
                method_override=settings.method_override,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
            )
            async with make_session(
                concurrency=settings.concurrency,
                transport=transport,
                ssl=ssl_context(settings.ca_bundle),
            ) as session:
                connection = await connect(settings, session)
                base_url, auth = connection.base_url, connection.auth
                api = HttpUsersApi(
                    session,
                    base_url=base_url,
                    account=settings.account,
                    auth=auth,
                    transport=transport,
                )
                limiter = RateLimiter(rate=settings.rate, clock=clock)
                engine = Engine(
                    api,
                    settings=EngineSettings(
                        concurrency=settings.concurrency,
                        max_attempts=settings.max_attempts,
                        retry_delays=settings.retry_delays,
                        dry_run=settings.dry_run,
                    ),
                    limiter=limiter,
                    clock=clock,
                )
                log.info(
                    "run_started",
                    changes=str(changes),
                    results=str(settings.results),
                    rows=total,
                    already_settled=len(earlier),
                    base_url=base_url,
                    concurrency=settings.concurrency,
                    rate=settings.rate,
                    dry_run=settings.dry_run,
                )
                stopped = await _run_engine(
                    engine, reader, sink, settings, total=total, earlier=frozenset(earlier)
                )
                if engine.stopped is StopReason.AUTH:
                    stopped = refused_message(auth, stopped)
                stats = limiter.stats()
        finally:
            sink.close()
    report = RunReport(
        counters=engine.counters,
        earlier=_count(earlier.values()),
        elapsed=time.monotonic() - started,
        stopped=stopped,
        effective_rate=stats.effective_rate,
        throttle_wait=stats.throttle_wait,
    )
    log.info(
        "run_finished",
        elapsed=round(report.elapsed, 3),
        stopped=stopped,
        outcomes={o.value: n for o, n in engine.counters.outcomes.items()},
        requests=engine.counters.requests,
    )
    print_summary(report, settings, out=out)
    return report


async def _run_engine(
    engine: Engine,
    reader: object,
    sink: ResultsJournal,
    settings: ApplySettings,
    *,
    total: int,
    earlier: frozenset[int],
) -> str | None:
    """Run the engine under signal handling and the progress display; the stop reason."""
    from collections.abc import Iterable

    from bulkusers.changes import Change, InvalidRow

    rows: Iterable[Change | InvalidRow] = reader  # type: ignore[assignment]
    progress = ProgressDisplay(total=total, already=len(earlier)) if settings.progress else None

    def report(result: RowResult) -> None:
        sink.write(result)
        if progress is not None:
            progress.settled(result)
        _log_row(result)

    stopped: str | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, engine, settings.grace)
        try:
            if progress is not None:
                with progress:
                    await engine.run(rows, report, skip_rows=earlier)
            else:
                await engine.run(rows, report, skip_rows=earlier)
        except RunStopped as exc:
            stopped = str(exc)
        finally:
            tg.cancel_scope.cancel()
    if stopped is None and engine.stopped is not None:
        stopped = engine.stop_message
    return stopped


async def _watch_signals(engine: Engine, grace: float) -> None:
    """First SIGINT/SIGTERM: take no new rows, let rows in flight finish for `grace` seconds.
    Second signal (or the grace running out): cut the rows in flight off; they end skipped."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if engine.stopped is None:
                engine.request_stop(
                    StopReason.INTERRUPTED, f"interrupted by {signal.Signals(signum).name}"
                )
                print(
                    f"\nbulkusers: stopping: letting rows in flight finish (up to {grace:g} s); "
                    "press Ctrl-C again to stop at once",
                    file=sys.stderr,
                    flush=True,
                )
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cut_after, engine, grace)
                    async for _ in signals:
                        engine.hard_stop()
                        tg.cancel_scope.cancel()
                        break
                return


async def _cut_after(engine: Engine, grace: float) -> None:
    await anyio.sleep(grace)
    engine.hard_stop()


def _log_row(result: RowResult) -> None:
    """The one canonical event per row."""
    level = log.info if result.outcome.is_success else log.warning
    level(
        "row_settled",
        row=result.row,
        user_id=result.id,
        outcome=result.outcome.value,
        attempts=result.attempts,
        http_status=result.http_status,
        changed=list(result.changed),
        error=result.error or None,
    )


def _count(results: object) -> dict[Outcome, int]:
    counts: dict[Outcome, int] = {}
    for result in results:  # type: ignore[attr-defined]
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts


def print_summary(report: RunReport, settings: ApplySettings, *, out: TextIO) -> None:
    """The end-of-run summary, for a person."""
    counters = report.counters
    outcomes: dict[Outcome, int] = dict(report.earlier)
    for outcome, n in counters.outcomes.items():
        outcomes[outcome] = outcomes.get(outcome, 0) + n
    rows = sum(outcomes.values())
    updated = counters.outcomes.get(Outcome.UPDATED, 0) + counters.outcomes.get(
        Outcome.WOULD_UPDATE, 0
    )
    speed = updated / report.elapsed if report.elapsed > 0 else 0.0
    lines = []
    title = "dry run" if settings.dry_run else "run"
    if report.stopped:
        lines.append(f"bulkusers: {title} STOPPED: {report.stopped}")
    else:
        lines.append(f"bulkusers: {title} finished")
    lines.append(f"  rows       {rows} in {settings.changes}")
    order = [o for o in Outcome if outcomes.get(o)]
    lines.append("  outcomes   " + (", ".join(f"{o.value} {outcomes[o]}" for o in order) or "none"))
    if report.earlier:
        lines.append(f"             ({sum(report.earlier.values())} settled by an earlier run)")
    lines.append(
        f"  requests   {counters.requests} (GET {counters.gets}, PUT {counters.puts}), "
        f"retries {counters.retries}, conflicts {counters.conflicts}, "
        f"429s {counters.throttled} ({report.throttle_wait:.1f} s paused)"
    )
    rate = "unlimited" if settings.rate == 0 else f"{settings.rate:g} req/s"
    effective = (
        f", effective {report.effective_rate:.1f} req/s"
        if settings.rate and not math.isclose(report.effective_rate, settings.rate)
        else ""
    )
    lines.append(
        f"  elapsed    {report.elapsed:.1f} s, {speed:.1f} updates/s (rate {rate}{effective})"
    )
    lines.append(f"  results    {settings.results}")
    if report.stopped:
        lines.append("  resume     run the same command with --resume to finish the rest")
    print("\n".join(lines), file=out, flush=True)


Reporter = Callable[[RowResult], None]
