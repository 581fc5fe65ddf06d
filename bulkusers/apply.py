"""One `apply` run, wired: changes file -> engine -> journal, with signals, progress and the
closing summary."""

from __future__ import annotations

import collections
import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

import anyio
import structlog

from bulkusers.changes import Change, InvalidRow, count_rows, fingerprint, open_changes
from bulkusers.client import HttpUsersApi, Transport, make_session
from bulkusers.clock import Clock, SystemClock
from bulkusers.connect import connect, refused_message, ssl_context
from bulkusers.engine import Counters, Engine, EngineSettings, StopReason
from bulkusers.errors import ResultsFileError, RunStopped
from bulkusers.health import HealthGate
from bulkusers.progress import ProgressDisplay
from bulkusers.ratelimit import LimiterStats, RateLimiter
from bulkusers.results import Outcome, ResultsJournal, RowResult, meta_path, read_journal
from bulkusers.settings import ApplySettings

log = structlog.get_logger("bulkusers.apply")


@dataclass(frozen=True, slots=True)
class RunReport:
    """What the summary says and the exit code is decided from."""

    counters: Counters
    earlier: dict[Outcome, int]  # outcomes settled by an earlier run (--resume)
    elapsed: float
    stopped: str | None
    limiter: LimiterStats
    outages: int
    outage_seconds: float

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
        earlier = _settled_earlier(settings, digest)
        total = count_rows(changes)
        sink = ResultsJournal(settings.results, clock=clock)
        sink.prepare(keep=sorted(earlier.values(), key=lambda r: r.row))  # exit 2 if unwritable
        stopped: str | None = None
        try:
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
                # Until commit, an earlier results file stays exactly as it was.
                connection = await connect(settings, session)
                saved = sink.commit(fingerprint=digest, changes=changes, backup=not settings.resume)
                if saved is not None:
                    print(f"bulkusers: the previous results are kept in {saved}", file=sys.stderr)
                limiter = RateLimiter(rate=settings.rate, clock=clock, min_rate=settings.min_rate)
                api = HttpUsersApi(
                    session,
                    base_url=connection.base_url,
                    account=settings.account,
                    auth=connection.auth,
                    transport=transport,
                    pace=limiter.acquire,
                )
                health = HealthGate(
                    clock=clock, probe_delays=settings.retry_delays, max_outage=settings.max_outage
                )
                engine = Engine(
                    api,
                    settings=EngineSettings(
                        concurrency=settings.concurrency,
                        max_attempts=settings.max_attempts,
                        retry_delays=settings.retry_delays,
                        max_outage=settings.max_outage,
                        dry_run=settings.dry_run,
                    ),
                    limiter=limiter,
                    clock=clock,
                    health=health,
                )
                log.info(
                    "run_started",
                    changes=str(changes),
                    results=str(settings.results),
                    rows=total,
                    already_settled=len(earlier),
                    base_url=connection.base_url,
                    concurrency=settings.concurrency,
                    rate=settings.rate,
                    dry_run=settings.dry_run,
                )
                stopped = await _run_engine(
                    engine, reader, sink, settings, total=total, earlier=frozenset(earlier)
                )
                if engine.stopped is StopReason.AUTH:
                    stopped = refused_message(connection.auth, stopped)
        finally:
            sink.abandon()  # a prepared file never committed (set-up failed) goes away
            try:
                sink.close()
            except OSError as exc:
                # The lines already written stand; only the final fsync failed.
                stopped = stopped or f"closing the results file failed: {exc.strerror or exc}"
    report = RunReport(
        counters=engine.counters,
        earlier=dict(collections.Counter(r.outcome for r in earlier.values())),
        elapsed=time.monotonic() - started,
        stopped=stopped,
        limiter=limiter.stats(),
        outages=health.outages,
        outage_seconds=health.outage_seconds,
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


def _settled_earlier(settings: ApplySettings, digest: str) -> dict[int, RowResult]:
    """With --resume, the rows an earlier run settled; refuse a journal of another input.
    A real run never counts a dry run's `would_update` as settled: nothing was sent."""
    if settings.results.exists() and settings.results.samefile(settings.changes):
        raise ResultsFileError(f"--results {settings.results} is the changes file itself")
    if not settings.resume:
        return {}
    journal = read_journal(settings.results)
    if journal.settled and journal.fingerprint is None:
        raise ResultsFileError(
            f"--resume: {meta_path(settings.results)} is missing, so nothing proves "
            f"{settings.results} was made from this {settings.changes}; restore it, or start "
            "over with a new --results path"
        )
    if journal.fingerprint is not None and journal.fingerprint != digest:
        raise ResultsFileError(
            f"--resume: {settings.results} was made from a different version of "
            f"{settings.changes} (the file changed since); finish with the original file, "
            "or start over with a new --results path"
        )
    # Rows refused with 403 are tried again: the credential's scopes may have been fixed.
    return {
        n: r
        for n, r in journal.settled.items()
        if not (r.outcome is Outcome.REJECTED and r.http_status == 403)
        and (settings.dry_run or r.outcome is not Outcome.WOULD_UPDATE)
    }


async def _run_engine(
    engine: Engine,
    rows: Iterable[Change | InvalidRow],
    sink: ResultsJournal,
    settings: ApplySettings,
    *,
    total: int,
    earlier: frozenset[int],
) -> str | None:
    """Run the engine under signal handling and the progress display; the stop reason."""
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
            with progress if progress is not None else contextlib.nullcontext():
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
            engine.request_stop(
                StopReason.INTERRUPTED, f"interrupted by {signal.Signals(signum).name}"
            )
            print(
                f"\nbulkusers: stopping: rows in flight may finish (up to {grace:g} s), the "
                "rest are recorded `skipped`; press Ctrl-C again to stop at once",
                file=sys.stderr,
                flush=True,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cut_after, engine, grace)
                async for _ in signals:
                    break
                engine.hard_stop()
                tg.cancel_scope.cancel()
            return


async def _cut_after(engine: Engine, grace: float) -> None:
    await anyio.sleep(grace)
    engine.hard_stop()


def _log_row(result: RowResult) -> None:
    """The one canonical event per row: a warning when the row needs a look; rows skipped by
    a stop are expected (the summary counts them), so they stay at info."""
    quiet = result.outcome.is_success or result.outcome is Outcome.SKIPPED
    level = log.info if quiet else log.warning
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


def print_summary(report: RunReport, settings: ApplySettings, *, out: TextIO) -> None:
    """The end-of-run summary, for a person."""
    counters = report.counters
    outcomes: collections.Counter[Outcome] = collections.Counter(report.earlier)
    outcomes.update(counters.outcomes)
    rows = sum(outcomes.values())
    done = counters.outcomes[Outcome.UPDATED] + counters.outcomes[Outcome.WOULD_UPDATE]
    speed = done / report.elapsed if report.elapsed > 0 else 0.0
    title = "dry run" if settings.dry_run else "run"
    lines = [
        f"bulkusers: {title} STOPPED: {report.stopped}"
        if report.stopped
        else f"bulkusers: {title} finished",
        f"  rows       {rows} in {settings.changes}",
        "  outcomes   "
        + (", ".join(f"{o.value} {outcomes[o]}" for o in Outcome if outcomes[o]) or "none"),
    ]
    if report.earlier:
        lines.append(f"             ({sum(report.earlier.values())} settled by an earlier run)")
    limiter = report.limiter
    lines.append(
        f"  requests   {counters.requests} (GET {counters.gets}, PUT {counters.puts}), "
        f"retries {counters.retries}, conflicts {counters.conflicts}, "
        f"429s {counters.throttled} ({limiter.throttle_wait:.1f} s paused)"
    )
    rate = "unlimited" if settings.rate == 0 else f"{settings.rate:g} req/s"
    if settings.rate and not math.isclose(limiter.lowest_rate, settings.rate):
        rate += (
            f"; 429s cut it to {limiter.lowest_rate:.1f}, {limiter.effective_rate:.1f} at the end"
        )
    lines.append(
        f"  elapsed    {report.elapsed:.2f} s, {speed:.1f} updates/s, "
        f"{counters.requests / report.elapsed if report.elapsed else 0:.1f} req/s (rate {rate})"
    )
    if report.outages:
        lines.append(
            f"  outages    {report.outages}: the API was down {report.outage_seconds:.1f} s; "
            "rows waited instead of failing"
        )
    lines.append(f"  results    {settings.results}")
    if report.stopped:
        lines.append("  resume     run the same command with --resume to finish the rest")
    print("\n".join(lines), file=out, flush=True)
