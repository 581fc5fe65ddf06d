"""End to end: the real `bulkusers apply` against the real simulator over loopback HTTP,
asserting the simulator's final state, the results file and the exit code."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bulkusers.simulator import RunningSimulator, SimConfig, serve
from tests.e2e import (
    SERVER_MANAGED,
    apply_args,
    read_results,
    run_cli,
    users_by_id,
    without,
    write_csv,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

FIRST_ID = 10000001


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(SimConfig(users=60, seed=3)) as running:
        yield running


def ids(n: int, start: int = FIRST_ID) -> list[int]:
    return list(range(start, start + n))


async def test_email_only_leaves_everything_else_byte_identical(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """A file touching only email changes nothing else of any user, unknown attributes and
    masked fullName/employeeId included."""
    before = users_by_id(sim.sim.snapshot())
    changes = write_csv(
        tmp_path / "emails.csv",
        ["id", "email"],
        [[uid, f"new.{uid}@example.org"] for uid in ids(60)],
    )
    done = await run_cli(*apply_args(changes, sim.url))
    assert done.returncode == 0, done.stderr
    after = users_by_id(sim.sim.snapshot())
    for uid in ids(60):
        assert after[uid]["email"] == f"new.{uid}@example.org"
        keep = SERVER_MANAGED | {"email"}
        assert without(after[uid], keep) == without(before[uid], keep)
        assert after[uid]["fullName"]
        assert after[uid]["fullName"] == before[uid]["fullName"]
    rows = read_results(tmp_path / "emails.results.csv")
    assert len(rows) == 60
    assert {r["outcome"] for r in rows} == {"updated"}
    assert {r["changed"] for r in rows} == {"email"}
    assert "updated 60" in done.stdout


async def test_second_run_is_all_unchanged_with_zero_puts(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Re-running a file is harmless: every row `unchanged`, no PUT sent."""
    changes = write_csv(
        tmp_path / "c.csv",
        ["id", "maxChats", "skillIds:add", "isEnabled"],
        [[uid, 4, "101|102", "yes"] for uid in ids(30)],
    )
    first = await run_cli(*apply_args(changes, sim.url))
    assert first.returncode == 0, first.stderr
    puts = sim.sim.stats.puts
    second = await run_cli(*apply_args(changes, sim.url))
    assert second.returncode == 0, second.stderr
    assert sim.sim.stats.puts == puts
    assert {r["outcome"] for r in read_results(tmp_path / "c.results.csv")} == {"unchanged"}


async def test_dry_run_sends_no_put(sim: RunningSimulator, tmp_path: Path) -> None:
    """--dry-run reads, diffs and reports `would_update`; the server is untouched."""
    before = sim.sim.snapshot()
    changes = write_csv(tmp_path / "c.csv", ["id", "nickname"], [[uid, "Zed"] for uid in ids(10)])
    done = await run_cli(*apply_args(changes, sim.url, "--dry-run"))
    assert done.returncode == 0, done.stderr
    assert sim.sim.stats.puts == 0
    assert sim.sim.snapshot()["users"] == before["users"]
    rows = read_results(tmp_path / "c.results.csv")
    assert [(r["outcome"], r["changed"]) for r in rows] == [("would_update", "nickname")] * 10


async def test_five_rows_for_one_user_apply_in_file_order(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Rows naming the same id run in file order, never concurrently."""
    uid = FIRST_ID
    changes = write_csv(
        tmp_path / "c.csv",
        ["id", "skillIds:add", "skillIds:remove"],
        [
            [uid, "901|902", ""],
            [uid, "", "901"],
            [uid, "903|901", ""],
            [uid, "", "902"],
            [uid, "904", "903"],
        ],
    )
    before = users_by_id(sim.sim.snapshot())[uid]["skillIds"]
    done = await run_cli(*apply_args(changes, sim.url, "--concurrency", "16"))
    assert done.returncode == 0, done.stderr
    expected = [s for s in before if s not in (901, 902, 903, 904)] + [901, 904]
    assert users_by_id(sim.sim.snapshot())[uid]["skillIds"] == expected
    rows = read_results(tmp_path / "c.results.csv")
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r["outcome"] == "updated" and r["attempts"] == "1" for r in rows)


async def test_invalid_rows_are_never_sent(sim: RunningSimulator, tmp_path: Path) -> None:
    """Rows that do not parse end `invalid` with row and column; nothing is sent for them;
    the other rows go on; exit 1."""
    a, b, c = ids(3)
    changes = write_csv(
        tmp_path / "c.csv",
        ["id", "maxChats", "isEnabled"],
        [[a, "ten", "true"], [b, 5, "maybe"], ["12x", 5, "true"], [c, 6, "false"]],
    )
    revisions = {u["id"]: u["revision"] for u in sim.sim.snapshot()["users"]}
    done = await run_cli(*apply_args(changes, sim.url))
    assert done.returncode == 1
    rows = {r["row"]: r for r in read_results(tmp_path / "c.results.csv")}
    assert [rows[n]["outcome"] for n in "123"] == ["invalid"] * 3
    assert rows["1"]["error"].startswith("row 1, column maxChats:")
    assert rows["2"]["error"].startswith("row 2, column isEnabled:")
    assert rows["3"]["error"].startswith("row 3, column id:")
    assert rows["4"]["outcome"] == "updated"
    after = users_by_id(sim.sim.snapshot())
    assert after[a]["revision"] == revisions[a]
    assert after[b]["revision"] == revisions[b]
    assert sim.sim.stats.gets == 1
    assert sim.sim.stats.puts == 1


async def test_unknown_column_exits_2_with_zero_requests(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """An unknown column rejects the whole file before any request, naming the column and
    the closest valid name."""
    changes = write_csv(tmp_path / "c.csv", ["id", "emial"], [[FIRST_ID, "x@example.com"]])
    done = await run_cli(*apply_args(changes, sim.url))
    assert done.returncode == 2
    assert "emial" in done.stderr
    assert "email" in done.stderr
    assert sim.sim.stats.requests == 0
    assert not (tmp_path / "c.results.csv").exists()


async def test_other_admin_edits_and_ours_both_survive(tmp_path: Path) -> None:
    """With another admin editing at 10 Hz, conflicts are re-read and re-applied: their
    edits and ours are both in the final state."""
    config = SimConfig(users=40, seed=5, other_admin_hz=10, latency_ms=20)
    async with serve(config) as running:
        changes = write_csv(
            tmp_path / "c.csv",
            ["id", "maxChats", "skillIds:add"],
            [[uid, 7, "777"] for uid in ids(40)] * 3,
        )
        done = await run_cli(*apply_args(changes, running.url, "--rate", "40"))
        snapshot = running.sim.snapshot()
    assert done.returncode == 0, done.stdout + done.stderr
    users = users_by_id(snapshot)
    edits = {int(k): v for k, v in snapshot["other_admin_edits"].items()}
    assert len(edits) > 5
    for uid in ids(40):
        assert users[uid]["maxChats"] == 7
        assert 777 in users[uid]["skillIds"]
        if uid in edits:
            assert users[uid]["description"] == edits[uid]
    outcomes = {r["outcome"] for r in read_results(tmp_path / "c.results.csv")}
    assert outcomes <= {"updated", "unchanged"}


async def test_collection_revision_every_row_updated(tmp_path: Path) -> None:
    """Account-wide If-Match: concurrent writes to different users collide, yet every row
    ends `updated`."""
    async with serve(
        SimConfig(users=50, seed=2, collection_revision=True, latency_ms=2)
    ) as running:
        changes = write_csv(tmp_path / "c.csv", ["id", "maxChats"], [[uid, 11] for uid in ids(50)])
        done = await run_cli(*apply_args(changes, running.url, "--concurrency", "8"))
        users = users_by_id(running.sim.snapshot())
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(users[uid]["maxChats"] == 11 for uid in ids(50))
    assert [r["outcome"] for r in read_results(tmp_path / "c.results.csv")] == ["updated"] * 50


def expected_state(
    initial: dict[int, dict[str, Any]], rows: list[tuple[int, int, list[int], list[int]]]
) -> dict[int, tuple[int, list[int]]]:
    """What maxChats and skillIds must end as: an independent model, not the engine's code."""
    state = {uid: (u["maxChats"], list(u.get("skillIds") or [])) for uid, u in initial.items()}
    for uid, max_chats, add, remove in rows:
        _, skills = state[uid]
        skills = [s for s in skills if s not in remove]
        skills += [s for s in add if s not in skills]
        state[uid] = (max_chats, skills)
    return state


async def test_mixed_faults_end_in_the_expected_state(tmp_path: Path) -> None:
    """2,000 users, 20 ms latency, 5% 5xx, 5% drops, 5% lost PUT answers, another admin at
    10 Hz: every row ends updated or unchanged and the final state is the expected one."""
    n = 2000
    config = SimConfig(
        users=n,
        seed=11,
        latency_ms=20,
        error_fraction=0.05,
        drop_fraction=0.05,
        lost_put_fraction=0.05,
        other_admin_hz=10,
    )
    rng = random.Random(7)
    rows: list[tuple[int, int, list[int], list[int]]] = []
    for uid in ids(n):
        rows.append((uid, rng.randint(1, 9), [rng.randint(500, 510)], [rng.randint(500, 510)]))
    for uid in rng.sample(ids(n), 100):  # some users twice: file order matters
        rows.append((uid, rng.randint(1, 9), [rng.randint(500, 510)], [rng.randint(500, 510)]))
    rows = [(uid, m, add, [r for r in rem if r not in add]) for uid, m, add, rem in rows]
    changes = write_csv(
        tmp_path / "c.csv",
        ["id", "maxChats", "skillIds:add", "skillIds:remove"],
        [[uid, m, "|".join(map(str, a)), "|".join(map(str, r))] for uid, m, a, r in rows],
    )
    async with serve(config) as running:
        initial = users_by_id(running.sim.snapshot())
        done = await run_cli(
            # 12 retries: with ~10-15% of requests failing, 6 would leave a row `failed`
            # by plain bad luck about once in a couple of hundred runs.
            *apply_args(
                changes,
                running.url,
                "--concurrency",
                "32",
                "--max-attempts",
                "8",
                "--retry-delays",
                ",".join(["0.005"] * 12),
            ),
            timeout=240,
        )
        final = users_by_id(running.sim.snapshot())
        stats = running.sim.stats
    results = read_results(tmp_path / "c.results.csv")
    odd = [r for r in results if r["outcome"] not in ("updated", "unchanged")]
    assert done.returncode == 0, f"{done.stdout}\n{odd[:5]}\n{done.stderr[-2000:]}"
    assert len(results) == len(rows)
    assert sorted(int(r["row"]) for r in results) == list(range(1, len(rows) + 1))
    assert not odd
    expected = expected_state(initial, rows)
    for uid in ids(n):
        assert (final[uid]["maxChats"], final[uid]["skillIds"]) == expected[uid], uid
    assert stats.lost_puts > 0
    assert stats.drops > 0
