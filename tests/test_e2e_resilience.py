"""End to end, the run under stress: kill -9 and --resume, Ctrl-C, 429 storms, outages,
a full disk, and the journal's guards. Real CLI, real simulator, loopback only."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio
import pytest

from bulkusers.simulator import RunningSimulator, ScriptedResponse, SimConfig, serve
from tests.e2e import (
    ACCOUNT,
    FAST_RETRIES,
    apply_args,
    cli_env,
    read_results,
    run_cli,
    users_by_id,
    write_csv,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

FIRST_ID = 10000001
N = 300


def migration(tmp_path: Path, n: int = N) -> Path:
    """n rows, one per user: new maxChats and one skill added."""
    return write_csv(
        tmp_path / "c.csv",
        ["id", "maxChats", "skillIds:add"],
        [[FIRST_ID + i, 1 + i % 9, 800 + i % 5] for i in range(n)],
    )


def assert_migrated(sim: RunningSimulator, n: int = N) -> None:
    users = users_by_id(sim.sim.snapshot())
    for i in range(n):
        user = users[FIRST_ID + i]
        assert user["maxChats"] == 1 + i % 9
        assert 800 + i % 5 in user["skillIds"]


def results_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return -1


@dataclass
class Started:
    """A CLI process whose output goes to temporary files, so a chatty run never blocks."""

    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


def start_cli(*args: str | Path, preexec: Callable[[], None] | None = None) -> Started:
    """Start `python -m bulkusers ARGS` without waiting for it."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkusers", *map(str, args)],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        preexec_fn=preexec,
    )
    return Started(proc, out, err)


async def wait_for_lines(path: Path, lines: int, proc: Started) -> None:
    with anyio.fail_after(30):
        while results_lines(path) < lines:
            assert proc.poll() is None, "the run ended before the kill point"
            await anyio.sleep(0.01)


async def finish(started: Started, timeout: float = 60) -> tuple[int, str, str]:
    with anyio.fail_after(timeout):
        while started.poll() is None:
            await anyio.sleep(0.02)
    texts = []
    for stream in (started.out, started.err):
        stream.seek(0)
        texts.append(stream.read().decode())
        stream.close()
    return started.proc.returncode, texts[0], texts[1]


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(SimConfig(users=N, seed=4, latency_ms=2)) as running:
        yield running


@pytest.mark.parametrize("kill_at", [0, 90, 240])
async def test_kill_9_then_resume_finishes_exactly_once(
    sim: RunningSimulator, tmp_path: Path, kill_at: int
) -> None:
    """kill -9 at any point, then --resume: one line per row, the expected final state, and
    no PUT ever sent with a stale revision."""
    changes = migration(tmp_path)
    results = tmp_path / "c.results.csv"
    args = apply_args(changes, sim.url, "--rate", "250", "--concurrency", "8")
    proc = start_cli(*args)
    await wait_for_lines(results, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    await finish(proc)
    settled_before = results_lines(results)
    assert settled_before < N
    done = await run_cli(*args, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_results(results)
    assert sorted(int(r["row"]) for r in rows) == list(range(1, N + 1))
    assert {r["outcome"] for r in rows} <= {"updated", "unchanged"}
    assert_migrated(sim)
    assert sim.sim.stats.conflicts == 0
    assert sim.sim.stats.puts_applied <= N
    assert "settled by an earlier run" in done.stdout or settled_before <= 0


async def test_sigint_stops_gracefully_and_resume_completes(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Ctrl-C: rows in flight finish, the rest are `skipped`, summary printed, exit 3; the
    journal is valid and --resume completes it."""
    changes = migration(tmp_path)
    results = tmp_path / "c.results.csv"
    args = apply_args(changes, sim.url, "--rate", "150")
    proc = start_cli(*args)
    await wait_for_lines(results, 50, proc)
    proc.send_signal(signal.SIGINT)
    code, out, err = await finish(proc)
    assert code == 3, out + err
    assert "STOPPED: interrupted by SIGINT" in out
    assert "--resume" in out
    rows = read_results(results)
    assert sorted(int(r["row"]) for r in rows) == list(range(1, N + 1))
    skipped = [r for r in rows if r["outcome"] == "skipped"]
    assert skipped
    assert all(r["error"].startswith("not tried: the run stopped") for r in skipped)
    done = await run_cli(*args, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = read_results(results)
    assert sorted(int(r["row"]) for r in rows) == list(range(1, N + 1))
    assert {r["outcome"] for r in rows} <= {"updated", "unchanged"}
    assert_migrated(sim)


async def test_second_sigint_stops_at_once(sim: RunningSimulator, tmp_path: Path) -> None:
    """A second Ctrl-C cuts rows in flight off and still leaves a whole journal."""
    sim.sim.set_faults(latency_ms=300)
    changes = migration(tmp_path)
    results = tmp_path / "c.results.csv"
    proc = start_cli(*apply_args(changes, sim.url, "--grace", "30"))
    await wait_for_lines(results, 8, proc)
    proc.send_signal(signal.SIGINT)
    await anyio.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, _, _ = await finish(proc, timeout=10)
    assert code == 3
    rows = read_results(results)
    assert sorted(int(r["row"]) for r in rows) == list(range(1, N + 1))


async def test_429_storm_completes_within_the_rate(tmp_path: Path) -> None:
    """A server answering 429 to 30% of requests: the run completes, every worker honours
    Retry-After, and no second holds more than --rate + 1 requests."""
    config = SimConfig(users=30, seed=6, throttle_fraction=0.3, retry_after=0.1)
    async with serve(config) as running:
        changes = migration(tmp_path, 30)
        done = await run_cli(
            *apply_args(changes, running.url, "--rate", "30", "--min-rate", "12"), timeout=120
        )
        stats = running.sim.stats
    assert done.returncode == 0, done.stdout + done.stderr
    assert {r["outcome"] for r in read_results(tmp_path / "c.results.csv")} == {"updated"}
    assert stats.max_per_second <= 31
    assert stats.throttled > 5
    assert f"429s {stats.throttled} (" in done.stdout
    assert "cut it to" in done.stdout


async def test_429s_fall_as_the_rate_adapts(tmp_path: Path) -> None:
    """A server limit below --rate: 429s come in a burst at the start, then the limiter's
    cut keeps the run under the limit and they fall away."""
    config = SimConfig(users=25, seed=6, rate_limit=10, retry_after=0.2)
    async with serve(config) as running:
        changes = migration(tmp_path, 25)
        done = await run_cli(*apply_args(changes, running.url, "--rate", "40"), timeout=120)
        stats = running.sim.stats
        throttled = stats.per_second_429
    assert done.returncode == 0, done.stdout + done.stderr
    assert stats.max_per_second <= 41
    assert len(throttled) >= 4
    early, later = throttled[:2], throttled[2:]
    assert sum(early) >= 2
    assert sum(later) / len(later) < sum(early) / len(early) / 2


async def test_outage_window_fails_no_row(tmp_path: Path) -> None:
    """All 503 for a few seconds mid-run: rows wait for the API; none ends `failed`."""
    config = SimConfig(users=N, seed=8, outage_after=0.8, outage_seconds=2.5, latency_ms=2)
    async with serve(config) as running:
        changes = migration(tmp_path)
        done = await run_cli(
            *apply_args(changes, running.url, "--rate", "150", "--retry-delays", "0.05,0.1,0.2"),
            timeout=120,
        )
        assert_migrated(running)
        server_errors = running.sim.stats.server_errors
    assert done.returncode == 0, done.stdout + done.stderr
    assert server_errors > 0
    assert {r["outcome"] for r in read_results(tmp_path / "c.results.csv")} <= {
        "updated",
        "unchanged",
    }
    assert "outages    1" in done.stdout
    assert "api_outage" in done.stderr


async def test_outage_past_max_outage_exits_3_resumable(tmp_path: Path) -> None:
    """An API that stays down past --max-outage stops the run (exit 3) with the rest
    `skipped`; nothing is marked failed that --resume would not retry."""
    config = SimConfig(users=50, seed=8, outage_after=0.0, outage_seconds=3600)
    async with serve(config) as running:
        changes = migration(tmp_path, 50)
        done = await run_cli(
            *apply_args(changes, running.url, "--retry-delays", "0.05,0.1", "--max-outage", "1"),
            timeout=60,
        )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "kept failing for 1 s (--max-outage)" in done.stdout
    rows = read_results(tmp_path / "c.results.csv")
    assert sorted(int(r["row"]) for r in rows) == list(range(1, 51))
    assert sum(r["outcome"] == "skipped" for r in rows) >= 42


async def test_unwritable_results_exits_2_with_zero_requests(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A results path that cannot be written stops everything before any request."""
    changes = migration(tmp_path, 5)
    done = await run_cli(*apply_args(changes, sim.url, "--results", tmp_path / "no" / "r.csv"))
    assert done.returncode == 2
    assert "cannot write the results file" in done.stderr
    assert sim.sim.stats.requests == 0


async def test_disk_full_mid_run_stops_with_a_valid_journal(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Writes to the results file start failing mid-run (file size limit, as a full disk
    would): the run stops with exit 3, the journal holds only whole lines, --resume ends it."""
    changes = migration(tmp_path)
    results = tmp_path / "c.results.csv"
    limit = 4000

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # Pipes, not files, for the output: the size limit must hit the results file only.
    first = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "bulkusers", *map(str, apply_args(changes, sim.url))],
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            preexec_fn=small_files,
            timeout=60,
            check=False,
        )
    )
    code, out, err = first.returncode, first.stdout.decode(), first.stderr.decode()
    assert code == 3, out + err
    assert "writing the results file failed" in out
    data = results.read_bytes()
    assert data.endswith(b"\n")
    assert len(data) <= limit
    kept = read_results(results)
    assert 10 < len(kept) < N
    done = await run_cli(*apply_args(changes, sim.url, "--resume"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(int(r["row"]) for r in read_results(results)) == list(range(1, N + 1))
    assert_migrated(sim)


async def test_resume_refuses_a_changed_input(sim: RunningSimulator, tmp_path: Path) -> None:
    """--resume against a changes file that changed since refuses, exit 2, nothing sent."""
    changes = migration(tmp_path, 10)
    first = await run_cli(*apply_args(changes, sim.url))
    assert first.returncode == 0
    requests = sim.sim.stats.requests
    with changes.open("a", encoding="utf-8") as handle:
        handle.write(f"{FIRST_ID},5,\n")
    done = await run_cli(*apply_args(changes, sim.url, "--resume"))
    assert done.returncode == 2
    assert "different version" in done.stderr
    assert sim.sim.stats.requests == requests


async def test_resume_repairs_a_line_cut_by_a_crash(sim: RunningSimulator, tmp_path: Path) -> None:
    """A last line cut short mid-write is not taken as settled: the row runs again and the
    file ends with exactly one whole line per row."""
    changes = migration(tmp_path, 10)
    results = tmp_path / "c.results.csv"
    first = await run_cli(*apply_args(changes, sim.url))
    assert first.returncode == 0
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:6]) + lines[6][:7])  # header + 5 rows + a cut line
    done = await run_cli(*apply_args(changes, sim.url, "--resume"))
    assert done.returncode == 0, done.stderr
    rows = read_results(results)
    assert sorted(int(r["row"]) for r in rows) == list(range(1, 11))
    assert "(5 settled by an earlier run)" in done.stdout


async def test_role_change_is_flagged_in_dry_run_and_results(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A row that takes the Agent profile away says the server will reset skills and group."""
    users = users_by_id(sim.sim.snapshot())
    agent = next(uid for uid, u in users.items() if u["profileIds"] == [3])
    changes = write_csv(tmp_path / "c.csv", ["id", "profileIds"], [[agent, "1"]])
    done = await run_cli(*apply_args(changes, sim.url, "--dry-run"))
    assert done.returncode == 0
    (row,) = read_results(tmp_path / "c.results.csv")
    assert row["outcome"] == "would_update"
    assert "stops being an Agent" in row["error"]
    assert "skillIds" in row["error"]


async def test_nonexistent_changes_file_exits_2(sim: RunningSimulator, tmp_path: Path) -> None:
    """A missing input is a clear one-line error, exit 2, nothing sent."""
    done = await run_cli(*apply_args(tmp_path / "missing.csv", sim.url))
    assert done.returncode == 2
    assert "missing.csv" in done.stderr
    assert sim.sim.stats.requests == 0


def test_env_has_no_credentials() -> None:
    """The helpers never leak the developer's LP_* variables into test runs."""
    os.environ["LP_BEARER_TOKEN"] = "x"
    try:
        assert "LP_BEARER_TOKEN" not in cli_env()
    finally:
        del os.environ["LP_BEARER_TOKEN"]
    assert ACCOUNT == "123"
    assert FAST_RETRIES.count(",") == 5


async def test_resume_after_a_dry_run_applies_the_changes(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A dry run's `would_update` rows are not settled for a real run: --resume sends them."""
    changes = migration(tmp_path, 10)
    dry = await run_cli(*apply_args(changes, sim.url, "--dry-run"))
    assert dry.returncode == 0
    assert sim.sim.stats.puts == 0
    done = await run_cli(*apply_args(changes, sim.url, "--resume"))
    assert done.returncode == 0, done.stderr
    assert [r["outcome"] for r in read_results(tmp_path / "c.results.csv")] == ["updated"] * 10
    assert_migrated(sim, 10)


async def test_a_fresh_run_keeps_the_previous_results_as_bak(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Without --resume the old results file is not destroyed: it moves to .bak."""
    changes = migration(tmp_path, 5)
    first = await run_cli(*apply_args(changes, sim.url))
    assert first.returncode == 0
    results = tmp_path / "c.results.csv"
    before = results.read_text()
    second = await run_cli(*apply_args(changes, sim.url))
    assert second.returncode == 0
    assert (tmp_path / "c.results.csv.bak").read_text() == before
    assert "previous results are kept in" in second.stderr
    assert {r["outcome"] for r in read_results(results)} == {"unchanged"}


async def test_results_path_cannot_be_the_input(sim: RunningSimulator, tmp_path: Path) -> None:
    """--results pointing at the changes file is refused; the input is untouched."""
    changes = migration(tmp_path, 5)
    text = changes.read_text()
    done = await run_cli(*apply_args(changes, sim.url, "--results", changes))
    assert done.returncode == 2
    assert "is the changes file itself" in done.stderr
    assert changes.read_text() == text
    assert sim.sim.stats.requests == 0


async def test_failed_setup_leaves_earlier_results_untouched(tmp_path: Path) -> None:
    """An unknown account (exit 2) after a real run leaves that run's results as they were."""
    async with serve(SimConfig(users=5, seed=1)) as running:
        changes = migration(tmp_path, 5)
        first = await run_cli(*apply_args(changes, running.url))
        assert first.returncode == 0
        results = tmp_path / "c.results.csv"
        before = results.read_text()
        done = await run_cli(
            "apply", changes, "--account", "nosuch", "--csds-url", running.url, "--quiet"
        )
    assert done.returncode == 2, done.stderr
    assert results.read_text() == before
    assert not (tmp_path / "c.results.csv.bak").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # noqa: ASYNC240 - a test, after the run


async def test_resume_without_the_fingerprint_refuses(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A results file whose .meta is gone cannot prove it belongs to this input: refused."""
    changes = migration(tmp_path, 5)
    assert (await run_cli(*apply_args(changes, sim.url))).returncode == 0
    (tmp_path / "c.results.csv.meta").unlink()
    done = await run_cli(*apply_args(changes, sim.url, "--resume"))
    assert done.returncode == 2
    assert "is missing, so nothing proves" in done.stderr


async def test_resume_retries_rows_refused_with_403(tmp_path: Path) -> None:
    """A row rejected with 403 (a scope missing at the time) is tried again by --resume."""
    async with serve(SimConfig(users=3, seed=1)) as running:
        running.sim.script(
            FIRST_ID, "GET", [ScriptedResponse(status=403, body='{"message": "Forbidden"}')]
        )
        changes = migration(tmp_path, 3)
        first = await run_cli(*apply_args(changes, running.url))
        assert first.returncode == 1
        rows = {r["row"]: r for r in read_results(tmp_path / "c.results.csv")}
        assert (rows["1"]["outcome"], rows["1"]["http_status"]) == ("rejected", "403")
        done = await run_cli(*apply_args(changes, running.url, "--resume"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert_migrated(running, 3)
    outcomes = sorted((r["row"], r["outcome"]) for r in read_results(tmp_path / "c.results.csv"))
    assert outcomes == [("1", "updated"), ("2", "updated"), ("3", "updated")]
