"""The engine against an in-memory Users API: every policy of SPEC "What an update does"."""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from bulkusers.changes import Change, Edit, InvalidRow, Op
from bulkusers.client import Reply
from bulkusers.clock import FakeClock
from bulkusers.engine import Counters, Engine, EngineSettings
from bulkusers.errors import AuthRefused, OutageTooLong
from bulkusers.health import HealthGate
from bulkusers.ratelimit import RateLimiter
from bulkusers.results import Outcome, RowResult
from tests import fakes
from tests.fakes import FakeApi, make_user

pytestmark = pytest.mark.anyio

FAST = EngineSettings(concurrency=4, retry_delays=(5.0, 10.0, 15.0))


def change(row: int, uid: int, *edits: tuple[str, Op, Any]) -> Change:
    return Change(row=row, user_id=uid, edits=tuple(Edit(a, op, v) for a, op, v in edits))


def make_engine(
    api: FakeApi, settings: EngineSettings = FAST, *, clock: FakeClock | None = None
) -> tuple[Engine, FakeClock]:
    """An engine on a fake clock with no rate cap and seeded jitter."""
    clock = clock or FakeClock()
    limiter = RateLimiter(rate=0, clock=clock)
    engine = Engine(api, settings=settings, limiter=limiter, clock=clock, rng=random.Random(1))
    return engine, clock


async def run(
    api: FakeApi,
    rows: list[Change | InvalidRow],
    settings: EngineSettings = FAST,
    *,
    clock: FakeClock | None = None,
) -> tuple[dict[int, RowResult], Counters, Engine]:
    engine, _ = make_engine(api, settings, clock=clock)
    results: dict[int, RowResult] = {}

    def report(result: RowResult) -> None:
        assert result.row not in results, "one result per row"
        results[result.row] = result

    counters = await engine.run(rows, report)
    return results, counters, engine


async def test_only_the_named_attribute_changes() -> None:
    """A row setting email sends every other attribute back as received, unknown ones too."""
    api = FakeApi({1: make_user(1)})
    before = api.users[1]
    results, counters, _ = await run(api, [change(1, 1, ("email", Op.SET, "new@example.com"))])
    assert results[1].outcome is Outcome.UPDATED
    assert results[1].changed == ("email",)
    assert results[1].revision_before == "100"
    assert results[1].revision_after == "101"
    assert api.users[1] == {**before, "email": "new@example.com"}
    assert (counters.gets, counters.puts) == (1, 1)


async def test_no_change_means_no_put() -> None:
    """A row that changes nothing ends `unchanged` without a PUT."""
    api = FakeApi({1: make_user(1)})
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 3))])
    assert results[1].outcome is Outcome.UNCHANGED
    assert counters.puts == 0


async def test_conflict_rereads_and_keeps_the_other_edit() -> None:
    """409: GET again, re-apply the row; the other admin's edit and ours both survive."""
    api = FakeApi({1: make_user(1)})
    api.faults[("PUT", 1)] = ["edit"]
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))])
    assert results[1].outcome is Outcome.UPDATED
    assert results[1].attempts == 2
    assert counters.conflicts == 1
    assert api.users[1]["maxChats"] == 9
    assert api.users[1]["description"] == "edited by other admin #1"


async def test_conflicts_exhaust_attempts() -> None:
    """A user edited before every PUT ends `conflict` after --max-attempts attempts."""
    api = FakeApi({1: make_user(1)})
    api.faults[("PUT", 1)] = ["edit"] * 10
    settings = EngineSettings(concurrency=2, max_attempts=3)
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], settings)
    assert results[1].outcome is Outcome.CONFLICT
    assert results[1].attempts == 3
    assert results[1].http_status == 409
    assert "gave up after 3 attempts" in results[1].error
    assert counters.conflicts == 3
    assert api.users[1]["maxChats"] == 3


async def test_lost_put_answer_is_followed_by_a_fresh_read() -> None:
    """A PUT applied whose answer was lost is confirmed by a GET, never re-PUT."""
    api = FakeApi({1: make_user(1)})
    api.lose_put_answer(1)
    clock = FakeClock()
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], clock=clock)
    assert results[1].outcome is Outcome.UPDATED
    assert results[1].changed == ("maxChats",)
    assert "answer was lost" in results[1].error
    assert api.calls == [("GET", 1), ("PUT", 1), ("GET", 1)]
    assert len(api.puts_by_user[1]) == 1
    assert counters.retries == 1
    assert 4.5 <= clock.slept[0] <= 5.5


async def test_transient_get_failures_are_retried_with_the_policy_delays() -> None:
    """5xx and dropped connections are retried after 5 and 10 s (jittered), then succeed."""
    api = FakeApi({1: make_user(1)})
    api.faults[("GET", 1)] = ["503", "drop"]
    clock = FakeClock()
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], clock=clock)
    assert results[1].outcome is Outcome.UPDATED
    assert counters.retries == 2
    assert 4.5 <= clock.slept[0] <= 5.5
    assert 9.0 <= clock.slept[1] <= 11.0


async def test_transient_failures_exhaust_to_failed() -> None:
    """When the retry list is used up the row ends `failed` with the last problem."""
    api = FakeApi({1: make_user(1)})
    api.faults[("GET", 1)] = ["503"] * 4
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))])
    assert results[1].outcome is Outcome.FAILED
    assert results[1].http_status == 503
    assert results[1].error == "HTTP 503: 503 Service Unavailable"
    assert counters.retries == 3
    assert api.users[1]["maxChats"] == 3


async def test_lost_put_with_no_retries_left_is_settled_by_a_read() -> None:
    """With no retries left, a lost PUT answer is still read back, not reported failed."""
    api = FakeApi({1: make_user(1)})
    api.lose_put_answer(1)
    settings = EngineSettings(concurrency=1, retry_delays=())
    results, _, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], settings)
    assert results[1].outcome is Outcome.UPDATED
    assert api.calls == [("GET", 1), ("PUT", 1), ("GET", 1)]


async def test_429_pauses_every_worker_for_retry_after() -> None:
    """A 429 is waited out (Retry-After 2 s) and the request sent again."""
    api = FakeApi({1: make_user(1), 2: make_user(2)})
    api.faults[("GET", 1)] = ["429"]
    clock = FakeClock()
    results, counters, _ = await run(
        api,
        [change(1, 1, ("maxChats", Op.SET, 9)), change(2, 2, ("maxChats", Op.SET, 8))],
        clock=clock,
    )
    assert {r.outcome for r in results.values()} == {Outcome.UPDATED}
    assert counters.throttled == 1
    assert sum(clock.slept) >= 2.0


async def test_401_stops_the_run_and_skips_the_rest() -> None:
    """Credentials refused: AuthRefused, every row not tried ends `skipped`."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 21)})
    api.faults[("GET", 1)] = ["401"]
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 21)
    ]
    engine, _clock = make_engine(api, EngineSettings(concurrency=1))
    results: dict[int, RowResult] = {}
    with pytest.raises(AuthRefused, match="HTTP 401: Unauthorized"):
        await engine.run(rows, lambda r: results.__setitem__(r.row, r))
    assert sorted(results) == list(range(1, 21))
    assert all(r.outcome is Outcome.SKIPPED for r in results.values())
    assert api.calls == [("GET", 1)]


async def test_not_found_and_rejected() -> None:
    """404 -> not_found; another 4xx -> rejected with the server's message."""
    api = FakeApi({2: make_user(2)})
    api.faults[("PUT", 2)] = ["400"]
    results, _, _ = await run(
        api, [change(1, 1, ("maxChats", Op.SET, 9)), change(2, 2, ("maxChats", Op.SET, -1))]
    )
    assert results[1].outcome is Outcome.NOT_FOUND
    assert results[1].http_status == 404
    assert results[2].outcome is Outcome.REJECTED
    assert results[2].error == "HTTP 400: maxChats must be >= 0"


async def test_invalid_rows_are_reported_and_never_sent() -> None:
    """An invalid row settles as `invalid` with its message; nothing is sent for it."""
    api = FakeApi({1: make_user(1)})
    rows: list[Change | InvalidRow] = [
        InvalidRow(row=1, raw_id="abc", column="id", message="row 1, column id: 'abc' is bad"),
        change(2, 1, ("maxChats", Op.SET, 9)),
    ]
    results, counters, _ = await run(api, rows)
    assert results[1].outcome is Outcome.INVALID
    assert results[1].id == "abc"
    assert counters.requests == 2


async def test_dry_run_never_puts() -> None:
    """--dry-run reads and diffs only."""
    api = FakeApi({1: make_user(1)})
    settings = EngineSettings(dry_run=True)
    results, counters, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], settings)
    assert results[1].outcome is Outcome.WOULD_UPDATE
    assert results[1].changed == ("maxChats",)
    assert counters.puts == 0
    assert api.users[1]["maxChats"] == 3


async def test_rows_for_one_user_apply_in_file_order() -> None:
    """Five rows for one user, many workers: applied one at a time in file order."""
    api = FakeApi({1: make_user(1, skillIds=[])})
    rows: list[Change | InvalidRow] = [
        change(1, 1, ("skillIds", Op.ADD, (1, 2))),
        change(2, 1, ("skillIds", Op.REMOVE, (1,))),
        change(3, 1, ("skillIds", Op.ADD, (3, 1))),
        change(4, 1, ("skillIds", Op.REMOVE, (2,))),
        change(5, 1, ("skillIds", Op.ADD, (4,))),
    ]
    results, _, _ = await run(api, rows, EngineSettings(concurrency=8))
    assert api.users[1]["skillIds"] == [3, 1, 4]
    assert [p["skillIds"] for p in api.puts_by_user[1]] == [
        [1, 2],
        [2],
        [2, 3, 1],
        [3, 1],
        [3, 1, 4],
    ]
    assert all(r.outcome is Outcome.UPDATED and r.attempts == 1 for r in results.values())


async def test_collection_revision_switches_to_serial_writes() -> None:
    """Account-wide revisions: concurrent writes collide, the engine serialises and every
    row ends updated."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 41)}, collection=True)
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 10 + uid)) for uid in range(1, 41)
    ]
    results, counters, _ = await run(api, rows, EngineSettings(concurrency=8))
    assert [results[i].outcome for i in range(1, 41)] == [Outcome.UPDATED] * 40
    assert all(api.users[uid]["maxChats"] == 10 + uid for uid in range(1, 41))
    assert counters.conflicts < 40


async def test_concurrency_bounds_requests_in_flight() -> None:
    """No more than --concurrency requests are in flight at once."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 101)})
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 101)
    ]
    await run(api, rows, EngineSettings(concurrency=5))
    assert 1 < api.max_in_flight <= 5


async def test_hard_stop_skips_rows_in_flight() -> None:
    """A hard stop cuts rows off; every row still gets exactly one result."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 31)})
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 31)
    ]
    engine, _clock = make_engine(api, EngineSettings(concurrency=3))
    results: dict[int, RowResult] = {}

    def report(result: RowResult) -> None:
        results[result.row] = result
        if len(results) == 5:
            engine.hard_stop()

    await engine.run(rows, report)
    assert sorted(results) == list(range(1, 31))
    settled = [r for r in results.values() if r.outcome is Outcome.UPDATED]
    assert 5 <= len(settled) < 30
    assert all(api.users[int(r.id)]["maxChats"] == 9 for r in settled)


async def test_an_outage_pauses_instead_of_failing_rows() -> None:
    """When most requests fail, the rows wait for the API (probing with backoff) instead of
    spending their retries: no row ends `failed`."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 41)})
    api.outage_calls = 14  # 8 workers fail, then 6 probes (5+10+15+30+60+60 s)
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 41)
    ]
    clock = FakeClock()
    settings = EngineSettings(concurrency=8, retry_delays=(5.0, 10.0, 15.0))
    results, counters, engine = await run(api, rows, settings, clock=clock)
    assert [results[i].outcome for i in range(1, 41)] == [Outcome.UPDATED] * 40
    assert all(api.users[uid]["maxChats"] == 9 for uid in range(1, 41))
    health = engine._health
    assert health.outages == 1
    assert not health.in_outage
    # The failures are spent by the probes, not by each row's own retries.
    assert counters.requests == 40 * 2 + 14
    assert counters.retries < 8


async def test_an_outage_longer_than_max_outage_stops_the_run() -> None:
    """An API that stays down past --max-outage stops the run; rows end `skipped`."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 21)})
    api.down = True
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 21)
    ]
    engine, clock = make_engine(
        api, EngineSettings(concurrency=4, retry_delays=(5.0, 10.0), max_outage=120.0)
    )
    results: dict[int, RowResult] = {}
    started = clock.now()
    with pytest.raises(OutageTooLong, match="kept failing for 120 s"):
        await engine.run(rows, lambda r: results.__setitem__(r.row, r))
    assert sorted(results) == list(range(1, 21))
    assert {r.outcome for r in results.values()} <= {Outcome.SKIPPED, Outcome.FAILED}
    assert sum(r.outcome is Outcome.FAILED for r in results.values()) <= 4
    assert clock.now() - started >= 120.0
    assert api.calls.count(("GET", 1)) < 10


async def test_403_on_every_request_stops_the_run() -> None:
    """Ten 403s in a row mean a missing scope, not ten forbidden users: the run stops
    (exit 3) instead of marking 50,000 rows rejected; one 403 alone only rejects its row."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 31)})
    api.faults[("GET", 30)] = ["403"]
    for uid in range(1, 21):
        api.faults[("GET", uid)] = ["403"]
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in (30, 21, *range(1, 21), *range(22, 30))
    ]
    engine, _clock = make_engine(api, EngineSettings(concurrency=1))
    results: dict[int, RowResult] = {}
    with pytest.raises(AuthRefused, match="on 10 requests in a row"):
        await engine.run(rows, lambda r: results.__setitem__(r.row, r))
    assert len(results) == 30
    assert results[30].outcome is Outcome.REJECTED  # a lone 403: that user only
    assert results[21].outcome is Outcome.UPDATED
    assert [results[row].outcome for row in range(1, 10)] == [Outcome.REJECTED] * 9
    skipped = sorted(r.row for r in results.values() if r.outcome is Outcome.SKIPPED)
    assert skipped == [*range(10, 21), *range(22, 30)]


async def test_outage_during_serial_writes_does_not_deadlock() -> None:
    """Serial writes (account-wide revisions) and an outage at once: the probe never waits
    for a lock held by a worker that waits for the probe (a hang found in review)."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 5)}, collection=True)
    api.faults[("PUT", 1)] = ["503"]
    clock = FakeClock()
    settings = EngineSettings(concurrency=2, retry_delays=(5.0, 10.0), max_outage=60.0)
    health = HealthGate(clock=clock, probe_delays=settings.retry_delays, max_outage=60.0)
    for _ in range(7):  # a flaky spell: one more failure makes it an outage
        health.record(False)
    engine = Engine(
        api,
        settings=settings,
        limiter=RateLimiter(rate=0, clock=clock),
        clock=clock,
        health=health,
        rng=random.Random(1),
    )
    engine._serial = anyio.Lock()
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 5)
    ]
    results: dict[int, RowResult] = {}
    with anyio.fail_after(5):
        await engine.run(rows, lambda r: results.__setitem__(r.row, r))
    assert [results[uid].outcome for uid in range(1, 5)] == [Outcome.UPDATED] * 4
    assert all(api.users[uid]["maxChats"] == 9 for uid in range(1, 5))


async def test_hard_stop_during_an_unanswered_put_says_it_may_have_landed() -> None:
    """A row cut off while its PUT is out keeps its changes and says --resume will check."""
    api = FakeApi({1: make_user(1)})
    engine, _clock = make_engine(api, EngineSettings(concurrency=1))
    original_put = api.put_user

    async def put_then_stop(*args: Any) -> Any:
        engine.hard_stop()
        await anyio.lowlevel.checkpoint()
        return await original_put(*args)

    setattr(api, "put_user", put_then_stop)  # noqa: B010 - replace one method for this test
    results: dict[int, RowResult] = {}
    await engine.run(
        [change(1, 1, ("maxChats", Op.SET, 9))], lambda r: results.__setitem__(r.row, r)
    )
    assert results[1].outcome is Outcome.SKIPPED
    assert results[1].changed == ("maxChats",)
    assert "may have been applied" in results[1].error


async def test_server_messages_never_carry_the_rows_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that echoes passwordSh in its 400 message does not put it in the results."""
    api = FakeApi({1: make_user(1)})
    api.faults[("PUT", 1)] = ["400"]
    echo = Reply(status=400, body=b'{"message": "passwordSh \'Tr0ub4dor&3\' is too weak"}')
    monkeypatch.setitem(fakes._FAULTS, "400", echo)
    results, _, _ = await run(api, [change(1, 1, ("passwordSh", Op.SET, "Tr0ub4dor&3"))])
    assert results[1].outcome is Outcome.REJECTED
    assert "Tr0ub4dor&3" not in results[1].error
    assert results[1].error == "HTTP 400: passwordSh '[redacted]' is too weak"


async def test_a_block_of_failing_users_is_not_an_endless_outage() -> None:
    """Eight users in a row whose GET always fails look like an outage; the probe reads a
    user known to be fine, so those rows end `failed` and the rest of the run goes on."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 41)})
    for uid in range(3, 11):
        api.faults[("GET", uid)] = ["503"] * 50
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 41)
    ]
    settings = EngineSettings(concurrency=8, retry_delays=(5.0, 10.0, 15.0))
    results, _, engine = await run(api, rows, settings)
    outcomes = {uid: results[uid].outcome for uid in range(1, 41)}
    assert {uid for uid, o in outcomes.items() if o is Outcome.FAILED} == set(range(3, 11))
    assert all(outcomes[uid] is Outcome.UPDATED for uid in (1, 2, *range(11, 41)))
    assert engine._health.outages >= 1


async def test_read_only_credential_stops_on_put_403s() -> None:
    """Every GET fine, every PUT 403 (users.read without users.write): the run stops after
    ten refused PUTs instead of rejecting every row."""
    api = FakeApi({uid: make_user(uid) for uid in range(1, 31)})
    for uid in range(1, 31):
        api.faults[("PUT", uid)] = ["403"]
    rows: list[Change | InvalidRow] = [
        change(uid, uid, ("maxChats", Op.SET, 9)) for uid in range(1, 31)
    ]
    engine, _ = make_engine(api, EngineSettings(concurrency=1))
    results: dict[int, RowResult] = {}
    with pytest.raises(AuthRefused, match="on 10 requests in a row"):
        await engine.run(rows, lambda r: results.__setitem__(r.row, r))
    assert [results[row].outcome for row in range(1, 10)] == [Outcome.REJECTED] * 9
    assert {results[row].outcome for row in range(10, 31)} == {Outcome.SKIPPED}


async def test_lost_put_then_failed_reads_say_the_change_may_have_landed() -> None:
    """A PUT applied but unanswered, then reads that keep failing: the row ends `failed`,
    yet names its changes and says the PUT may have been applied."""
    api = FakeApi({1: make_user(1)})
    api.lose_put_answer(1)
    api.faults[("GET", 1)] = ["ok", "503", "503", "503"]
    settings = EngineSettings(concurrency=1, retry_delays=(1.0, 1.0))
    results, _, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], settings)
    assert results[1].outcome is Outcome.FAILED
    assert results[1].changed == ("maxChats",)
    assert "may have been applied" in results[1].error
    assert api.users[1]["maxChats"] == 9


async def test_the_read_back_after_a_lost_put_is_not_an_extra_attempt() -> None:
    """--max-attempts 1 and a lost PUT answer: the read-back belongs to the one attempt."""
    api = FakeApi({1: make_user(1)})
    api.lose_put_answer(1)
    settings = EngineSettings(concurrency=1, max_attempts=1)
    results, _, _ = await run(api, [change(1, 1, ("maxChats", Op.SET, 9))], settings)
    assert results[1].outcome is Outcome.UPDATED
    assert results[1].attempts == 1
