"""The simulator over real loopback HTTP: the Users API rules, faults, tokens, CSDS, the CLI."""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from bulkusers import schema
from bulkusers.sim_data import FIRST_USER_ID, generate_users, load_seed_file
from bulkusers.simulator import (
    RunningSimulator,
    ScriptedResponse,
    SimConfig,
    Simulator,
    serve,
)

pytestmark = pytest.mark.anyio

ACCOUNT = "123"
USERS = f"/api/account/{ACCOUNT}/configuration/le-users/users"
REPO = Path(__file__).resolve().parent.parent

#: Every attribute of the appendix table that GET returns for a generated user.
APPENDIX_ATTRIBUTES = frozenset(
    {
        "id", "pid", "deleted", "loginName", "fullName", "nickname", "isEnabled",
        "disabledManually", "maxChats", "maxAsyncChats", "email", "skillIds", "profileIds",
        "lobIds", "permissionGroups", "memberOf", "managerOf", "changePwdNextLogin",
        "lastPwdChangeDate", "dateUpdated", "pictureId", "pictureUrl", "backgndImgUri",
        "pnCertName", "description", "mobileNumber", "employeeId", "isApiUser", "userTypeId",
    }
)  # fmt: skip


class FakeClock:
    """The simulator's injectable clock, advanced by hand so timing tests never sleep."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 00:00:00 UTC
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Reply:
    """An answer as a test wants to see it: status, headers, parsed body."""

    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True)
class Api:
    """Thin helpers over a real aiohttp session aimed at one running simulator."""

    session: aiohttp.ClientSession
    url: str

    async def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> Reply:
        async with self.session.request(method, self.url + path, headers=headers, **kw) as r:
            text = await r.text()
            body = json.loads(text) if r.content_type == "application/json" else text
            return Reply(r.status, dict(r.headers), body)

    async def get(self, user_id: int | str, query: str = "v=4.0", **kw: Any) -> Reply:
        return await self.request("GET", f"{USERS}/{user_id}?{query}", **kw)

    async def put(
        self,
        user_id: int,
        body: object,
        revision: str | None,
        *,
        method: str = "PUT",
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if revision is not None:
            sent["If-Match"] = revision
        return await self.request(method, f"{USERS}/{user_id}?v=4.0", json=body, headers=sent)


@asynccontextmanager
async def running_api(
    config: SimConfig | None = None, *, clock: FakeClock | None = None
) -> AsyncIterator[tuple[RunningSimulator, Api]]:
    """A served simulator and a real client session aimed at it."""
    async with (
        serve(config or SimConfig(users=20), clock=clock) as running,
        aiohttp.ClientSession() as session,
    ):
        yield running, Api(session, running.url)


def first_user(sim: Simulator, *, profiles: set[int] | None = None) -> int:
    """The lowest user id, optionally one whose profileIds are exactly `profiles`."""
    return next(
        uid
        for uid in sorted(sim.users)
        if profiles is None or set(sim.users[uid]["profileIds"]) == profiles
    )


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# ---------------------------------------------------------------------- reading users


async def test_get_masks_personal_data_and_reports_revision() -> None:
    """GET answers the entity with fullName/employeeId "" and the user's revision in ac-revision."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        reply = await api.get(uid, "v=4.0&select=$all")
    stored = running.sim.users[uid]
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["ac-revision"] == str(running.sim.revisions[uid])
    assert stored["fullName"]
    assert stored["employeeId"]
    assert reply.body["fullName"] == ""
    assert reply.body["employeeId"] == ""
    assert "passwordSh" not in reply.body
    assert {k: v for k, v in reply.body.items() if k not in schema.MASKED} == {
        k: v for k, v in stored.items() if k not in schema.MASKED
    }


async def test_version_is_required_and_if_match_on_get_may_be_304() -> None:
    """v is required and must be 4.0, 5.0 or 6.0; If-Match of the current revision is 304."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        missing = await api.get(uid, "")
        old = await api.get(uid, "v=2.0")
        newer = await api.get(uid, "v=6.0")
        current = str(running.sim.revisions[uid])
        not_modified = await api.get(uid, headers={"If-Match": current})
        regardless = await api.get(uid, headers={"If-Match": "-1"})
    assert missing.status == 400
    assert "v is required" in missing.body["message"]
    assert old.status == 400
    assert newer.status == 200
    assert not_modified.status == 304
    assert regardless.status == 200


async def test_select_returns_only_the_named_attributes() -> None:
    """select=email answers id and email only: the trap a full-replace client must avoid."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        reply = await api.get(uid, "v=4.0&select=email,nickname")
    assert set(reply.body) == {"id", "email", "nickname"}


async def test_get_all_users_is_masked_and_carries_the_account_revision() -> None:
    """The collection GET lists every user, masked, with the account revision."""
    async with running_api(SimConfig(users=7)) as (running, api):
        reply = await api.request("GET", f"{USERS}?v=4.0")
    assert [u["id"] for u in reply.body] == sorted(running.sim.users)
    assert all(u["fullName"] == "" for u in reply.body)
    assert reply.headers["ac-revision"] == str(running.sim.revision)


async def test_unknown_user_account_and_bad_ids() -> None:
    """404 for an unknown user or account; 400 for an id that is not a positive long."""
    async with running_api() as (_, api):
        unknown = await api.get(FIRST_USER_ID + 999)
        account = await api.request(
            "GET", f"/api/account/999/configuration/le-users/users/{FIRST_USER_ID}?v=4.0"
        )
        letters = await api.get("abc")
        zero = await api.get(0)
    assert (unknown.status, unknown.body["status"]) == (404, 404)
    assert "not found" in unknown.body["message"]
    assert account.status == 404
    assert letters.status == 400
    assert zero.status == 400


# ---------------------------------------------------------------------- updating users


async def test_put_is_a_full_replace_that_removes_omitted_attributes() -> None:
    """Attributes left out of a PUT body are gone; the user gets the next account revision."""
    async with running_api() as (running, api):
        sim = running.sim
        uid = first_user(sim)
        got = await api.get(uid)
        body = {
            k: v for k, v in got.body.items() if k not in ("mobileNumber", "extendedAttributes")
        }
        before = sim.revision
        put = await api.put(uid, {**body, "nickname": "Renamed"}, got.headers["ac-revision"])
    stored = sim.users[uid]
    assert put.status == 200
    assert "mobileNumber" not in stored
    assert "extendedAttributes" not in stored
    assert stored["nickname"] == "Renamed"
    assert put.body["nickname"] == "Renamed"
    assert sim.revision == before + 1 == sim.revisions[uid]
    assert put.headers["ac-revision"] == str(sim.revision)
    assert put.body["fullName"] == ""


async def test_round_trip_keeps_masked_values_and_unknown_attributes() -> None:
    """GET's "" sent back for fullName/employeeId keeps the stored values; unknowns round-trip."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        original = dict(running.sim.users[uid])
        got = await api.get(uid)
        put = await api.put(uid, got.body, got.headers["ac-revision"])
    stored = running.sim.users[uid]
    assert put.status == 200
    assert stored["fullName"] == original["fullName"] != ""
    assert stored["employeeId"] == original["employeeId"]
    assert stored["extendedAttributes"] == original["extendedAttributes"]
    assert {k: v for k, v in stored.items() if k != "dateUpdated"} == {
        k: v for k, v in original.items() if k != "dateUpdated"
    }


async def test_stale_if_match_is_409_and_missing_if_match_is_428() -> None:
    """A stale revision is 409, no If-Match at all is 428, and neither changes anything."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        got = await api.get(uid)
        stale = str(int(got.headers["ac-revision"]) - 1)
        conflict = await api.put(uid, {**got.body, "nickname": "X"}, stale)
        missing = await api.put(uid, {**got.body, "nickname": "X"}, None)
        stats = running.sim.stats
    assert conflict.status == 409
    assert conflict.body["status"] == 409
    assert missing.status == 428
    assert running.sim.users[uid]["nickname"] != "X"
    assert (stats.conflicts, stats.precondition_required, stats.puts_applied) == (1, 1, 0)


async def test_collection_mode_makes_writes_to_different_users_conflict() -> None:
    """With collection revisions, a PUT to user B with the revision read before A's PUT is stale."""
    async with running_api(SimConfig(users=5, collection_revision=True)) as (running, api):
        a, b = sorted(running.sim.users)[:2]
        got_a, got_b = await api.get(a), await api.get(b)
        first = await api.put(a, got_a.body, got_a.headers["ac-revision"])
        second = await api.put(b, got_b.body, got_b.headers["ac-revision"])
        again = await api.get(b)
        retried = await api.put(b, again.body, again.headers["ac-revision"])
    assert got_a.headers["ac-revision"] == got_b.headers["ac-revision"]
    assert (first.status, second.status, retried.status) == (200, 409, 200)


async def test_post_with_method_override_is_a_put() -> None:
    """POST + X-HTTP-Method-Override: PUT updates like PUT; a plain POST is refused."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        got = await api.get(uid)
        override = {"X-HTTP-Method-Override": "PUT"}
        body = {**got.body, "nickname": "Overridden"}
        put = await api.put(uid, body, got.headers["ac-revision"], method="POST", headers=override)
        plain = await api.put(uid, body, put.headers["ac-revision"], method="POST")
        stats = running.sim.stats
    assert put.status == 200
    assert running.sim.users[uid]["nickname"] == "Overridden"
    assert plain.status == 405
    assert stats.by_method_override == {"PUT": 1}
    assert stats.by_method["POST"] == 1
    assert stats.puts == 1


async def test_body_id_mismatch_and_missing_required_attribute_are_400() -> None:
    """The body's id must match the path; each required attribute must be present and typed."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        got = await api.get(uid)
        rev = got.headers["ac-revision"]
        wrong_id = await api.put(uid, {**got.body, "id": uid + 1}, rev)
        no_email = await api.put(uid, {k: v for k, v in got.body.items() if k != "email"}, rev)
        bad_type = await api.put(uid, {**got.body, "maxChats": "7"}, rev)
        not_object = await api.put(uid, [got.body], rev)
    assert wrong_id.status == 400
    assert "id" in wrong_id.body["message"]
    assert no_email.status == 400
    assert "email is required" in no_email.body["message"]
    assert bad_type.status == 400
    assert "maxChats" in bad_type.body["message"]
    assert not_object.status == 400
    assert running.sim.revisions[uid] == int(rev)


async def test_duplicate_login_name_is_400() -> None:
    """loginName is unique across the account."""
    async with running_api() as (running, api):
        a, b = sorted(running.sim.users)[:2]
        got = await api.get(a)
        taken = running.sim.users[b]["loginName"]
        reply = await api.put(a, {**got.body, "loginName": taken}, got.headers["ac-revision"])
    assert reply.status == 400
    assert "loginName" in reply.body["message"]


async def test_assignment_dates_are_kept_for_staying_groups_and_set_for_new_ones() -> None:
    """assignmentDate is server-owned: kept while the group stays, set to now when it changes."""
    clock = FakeClock()
    async with running_api(SimConfig(users=60), clock=clock) as (running, api):
        sim = running.sim
        agent = first_user(sim, profiles={schema.AGENT_PROFILE})
        manager = next(uid for uid in sorted(sim.users) if len(sim.users[uid]["managerOf"]) >= 2)
        got = await api.get(agent)
        kept_date = got.body["memberOf"]["assignmentDate"]
        forged = {
            **got.body,
            "memberOf": {**got.body["memberOf"], "assignmentDate": "1999-01-01 00:00:00"},
        }
        same = await api.put(agent, forged, got.headers["ac-revision"])
        moved = await api.put(
            agent, {**same.body, "memberOf": {"agentGroupId": 424242}}, same.headers["ac-revision"]
        )
        got_m = await api.get(manager)
        staying = got_m.body["managerOf"][0]
        managed = [staying, {"agentGroupId": 515151}]
        remanaged = await api.put(
            manager, {**got_m.body, "managerOf": managed}, got_m.headers["ac-revision"]
        )
    assert same.body["memberOf"]["assignmentDate"] == kept_date
    assert moved.body["memberOf"] == {
        "agentGroupId": 424242,
        "assignmentDate": "2026-01-01 00:00:00",
    }
    assert remanaged.body["managerOf"] == [
        staying,
        {"agentGroupId": 515151, "assignmentDate": "2026-01-01 00:00:00"},
    ]
    assert sim.users[agent]["dateUpdated"] == "2026-01-01 00:00:00"


async def test_leaving_a_role_resets_its_attributes() -> None:
    """Leaving Agent resets the agent attributes; leaving Manager, managerOf."""
    async with running_api(SimConfig(users=60)) as (running, api):
        sim = running.sim
        agent = first_user(sim, profiles={schema.AGENT_PROFILE})
        manager = first_user(sim, profiles={schema.AGENT_MANAGER_PROFILE, schema.AGENT_PROFILE})
        got = await api.get(agent)
        demoted = await api.put(
            agent, {**got.body, "profileIds": [schema.ADMIN_PROFILE]}, got.headers["ac-revision"]
        )
        got_m = await api.get(manager)
        to_agent = await api.put(
            manager,
            {**got_m.body, "profileIds": [schema.AGENT_PROFILE]},
            got_m.headers["ac-revision"],
        )
    assert demoted.status == 200
    assert {
        k: sim.users[agent][k] for k in ("maxChats", "maxAsyncChats", "memberOf", "skillIds")
    } == {
        "maxChats": 0,
        "maxAsyncChats": None,
        "memberOf": None,
        "skillIds": [],
    }
    assert to_agent.status == 200
    assert sim.users[manager]["managerOf"] == []
    assert sim.users[manager]["skillIds"] == got_m.body["skillIds"]


async def test_disabling_sets_disabled_manually_unless_the_body_says() -> None:
    """isEnabled true -> false without disabledManually in the body sets disabledManually = true."""
    async with running_api() as (running, api):
        sim = running.sim
        uid = next(u for u in sorted(sim.users) if sim.users[u]["isEnabled"])
        got = await api.get(uid)
        body = {k: v for k, v in got.body.items() if k != "disabledManually"}
        await api.put(uid, {**body, "isEnabled": False}, got.headers["ac-revision"])
    assert sim.users[uid]["disabledManually"] is True


async def test_password_is_stored_hashed_never_returned_and_null_keeps_it() -> None:
    """passwordSh sets the password and lastPwdChangeDate; GET never shows it; null keeps it."""
    clock = FakeClock()
    async with running_api(clock=clock) as (running, api):
        sim = running.sim
        uid = first_user(sim)
        got = await api.get(uid)
        put = await api.put(uid, {**got.body, "passwordSh": "s3cret!"}, got.headers["ac-revision"])
        again = await api.put(uid, {**put.body, "passwordSh": None}, put.headers["ac-revision"])
    assert put.status == again.status == 200
    assert "passwordSh" not in put.body
    assert "passwordSh" not in sim.users[uid]
    assert sim.users[uid]["lastPwdChangeDate"] == "2026-01-01 00:00:00"
    assert sim.password_matches(uid, "s3cret!")
    assert sim.password_changes[uid] == 1
    assert "s3cret!" not in json.dumps(sim.snapshot())


# ---------------------------------------------------------------------- the other admin


async def test_other_admin_edits_descriptions_and_bumps_revisions() -> None:
    """At 50 Hz the other admin edits random users, each edit a new revision like a PUT."""
    async with running_api(SimConfig(users=10, other_admin_hz=50)) as (running, api):
        sim = running.sim
        start = sim.revision
        await anyio.sleep(0.3)
        edits = dict(sim.other_admin_edits)
        count = sim.stats.other_admin_edits
        uid, text = next(iter(edits.items()))
        got = await api.get(uid)
    assert count >= 5
    assert sim.revision >= start + count
    assert got.body["description"] == sim.users[uid]["description"] == text
    assert text.startswith("edited by other admin #")
    assert sim.snapshot()["other_admin_edits"][str(uid)] == sim.users[uid]["description"]


async def test_other_admin_is_switched_on_and_off_live() -> None:
    """set_faults(other_admin_hz=...) wakes the idle other admin, and 0 stops it again."""
    async with running_api(SimConfig(users=5)) as (running, _):
        sim = running.sim
        await anyio.sleep(0.05)
        idle = sim.stats.other_admin_edits
        sim.set_faults(other_admin_hz=100)
        await anyio.sleep(0.15)
        sim.set_faults(other_admin_hz=0)
        await anyio.sleep(0.02)
        stopped = sim.stats.other_admin_edits
        await anyio.sleep(0.05)
        later = sim.stats.other_admin_edits
    assert idle == 0
    assert stopped >= 5
    assert later == stopped


async def test_other_admin_edit_conflicts_with_a_read_revision() -> None:
    """An edit between our GET and PUT makes the PUT stale: the conflict the client must handle."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        got = await api.get(uid)
        running.sim.edit_as_other_admin(uid)
        reply = await api.put(uid, got.body, got.headers["ac-revision"])
    assert reply.status == 409
    assert running.sim.users[uid]["description"] == "edited by other admin #1"


# ---------------------------------------------------------------------- faults


#: POST is not idempotent, so aiohttp does not silently re-send it after a disconnection.
OVERRIDE = {"X-HTTP-Method-Override": "PUT"}


async def test_drop_fraction_one_gives_the_client_a_disconnection() -> None:
    """A dropped request closes the connection unanswered and applies nothing."""
    async with running_api(SimConfig(users=5, drop_fraction=1.0)) as (running, api):
        uid = first_user(running.sim)
        before = running.sim.snapshot()["users"]
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.put(uid, {"nickname": "never"}, "1", method="POST", headers=OVERRIDE)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.get(uid)
    # aiohttp re-sends an idempotent request (GET, PUT) once after a disconnection: 1 + 2.
    assert running.sim.stats.drops == 3
    assert running.sim.snapshot()["users"] == before


async def test_lost_put_is_applied_but_the_client_sees_a_disconnection() -> None:
    """lost_put_fraction=1: the change and the revision bump happen, the answer never comes."""
    async with running_api(SimConfig(users=5)) as (running, api):
        sim = running.sim
        uid = first_user(sim)
        got = await api.get(uid)
        sim.set_faults(lost_put_fraction=1.0)
        body = {**got.body, "nickname": "Applied"}
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.put(uid, body, got.headers["ac-revision"], method="POST", headers=OVERRIDE)
    assert sim.users[uid]["nickname"] == "Applied"
    assert sim.revisions[uid] == sim.revision
    assert sim.revision > int(got.headers["ac-revision"])
    assert (sim.stats.lost_puts, sim.stats.puts_applied) == (1, 1)


async def test_a_lost_put_answer_resent_by_aiohttp_meets_409() -> None:
    """aiohttp silently re-sends a PUT whose answer was lost; If-Match makes the copy a 409."""
    async with running_api(SimConfig(users=5)) as (running, api):
        sim = running.sim
        uid = first_user(sim)
        got = await api.get(uid)
        sim.set_faults(lost_put_fraction=1.0)
        reply = await api.put(uid, {**got.body, "nickname": "Once"}, got.headers["ac-revision"])
    assert reply.status == 409
    assert sim.users[uid]["nickname"] == "Once"
    assert (sim.stats.lost_puts, sim.stats.puts_applied, sim.stats.puts) == (1, 1, 2)


async def test_rate_limit_answers_429_with_retry_after_until_the_window_moves() -> None:
    """At rate_limit=5 the 6th request in a second gets 429 + Retry-After; a second later, 200."""
    clock = FakeClock()
    config = SimConfig(users=5, rate_limit=5, retry_after=0.2)
    async with running_api(config, clock=clock) as (running, api):
        uid = first_user(running.sim)
        statuses = [(await api.get(uid)).status for _ in range(5)]
        throttled = await api.get(uid)
        clock.advance(1.0)
        later = await api.get(uid)
        stats = running.sim.stats
    assert statuses == [200] * 5
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "0.2"
    assert later.status == 200
    assert stats.throttled == 1
    assert stats.per_second == [6, 1]
    assert stats.per_second_429 == [1, 0]


async def test_retry_after_whole_seconds_are_written_as_integers() -> None:
    """Retry-After: 2, not 2.0 (clients parse delta-seconds as an integer)."""
    async with running_api(SimConfig(users=3, throttle_fraction=1.0, retry_after=2)) as (
        running,
        api,
    ):
        reply = await api.get(first_user(running.sim))
    assert (reply.status, reply.headers["Retry-After"]) == (429, "2")


async def test_stats_count_the_busiest_second_and_per_second_buckets() -> None:
    """max_per_second: most arrivals in any sliding second; per_second: buckets from the first."""
    clock = FakeClock()
    async with running_api(SimConfig(users=3), clock=clock) as (running, api):
        uid = first_user(running.sim)
        for step, count in ((0.0, 3), (0.5, 2), (0.7, 4)):
            clock.advance(step)
            for _ in range(count):
                await api.get(uid)
        served = await api.request("GET", "/_sim/stats")
        stats = running.sim.stats
    assert stats.max_per_second == 6  # the 2 at +0.5 and the 4 at +1.2
    assert stats.per_second == [5, 4]
    assert served.body["max_per_second"] == 6
    assert served.body["by_status"] == {"200": 9}
    assert served.body["by_version"] == {"4.0": 9}
    assert served.body["gets"] == 9


async def test_error_fraction_answers_5xx_some_as_html_and_applies_nothing() -> None:
    """error_fraction=1: every answer is 500/502/503, some HTML pages, the rest JSON."""
    async with running_api(SimConfig(users=3, error_fraction=1.0)) as (running, api):
        uid = first_user(running.sim)
        replies = [await api.get(uid) for _ in range(30)]
    assert {r.status for r in replies} <= {500, 502, 503}
    html = [r for r in replies if isinstance(r.body, str)]
    assert 3 <= len(html) <= 20
    assert all(r.body.startswith("<html>") for r in html)
    assert running.sim.stats.server_errors == 30


async def test_outage_answers_503_for_its_window_only() -> None:
    """set_faults(outage_seconds=3) starts an outage now; after 3 s the API answers again."""
    clock = FakeClock()
    async with running_api(SimConfig(users=3), clock=clock) as (running, api):
        uid = first_user(running.sim)
        running.sim.set_faults(outage_seconds=3)
        during = await api.get(uid)
        clock.advance(2.9)
        still = await api.get(uid)
        clock.advance(0.2)
        after = await api.get(uid)
    assert (during.status, still.status, after.status) == (503, 503, 200)


async def test_configured_outage_starts_after_its_delay() -> None:
    """outage_after=10, outage_seconds=5: fine before 10 s, 503 from 10 s to 15 s."""
    clock = FakeClock()
    config = SimConfig(users=3, outage_after=10, outage_seconds=5)
    async with running_api(config, clock=clock) as (running, api):
        uid = first_user(running.sim)
        statuses = []
        for t in (0, 10, 4.9, 0.2):
            clock.advance(t)
            statuses.append((await api.get(uid)).status)
    assert statuses == [200, 503, 503, 200]


async def test_scripted_answers_come_first_then_normal_handling() -> None:
    """Queued answers are served in order for that user and method, then the real API resumes."""
    async with running_api() as (running, api):
        sim = running.sim
        uid = first_user(sim)
        sim.script(
            uid,
            "GET",
            [
                ScriptedResponse(503, '{"message": "busy"}', {"Retry-After": "1"}),
                ScriptedResponse(502, "<html>bad gateway</html>", content_type="text/html"),
            ],
        )
        sim.script(uid, "ANY", [ScriptedResponse(412, '{"message": "precondition"}')])
        first, second, third, fourth = [await api.get(uid) for _ in range(4)]
    assert (first.status, first.body, first.headers["Retry-After"]) == (
        503,
        {"message": "busy"},
        "1",
    )
    assert (second.status, second.body) == (502, "<html>bad gateway</html>")
    assert third.status == 412
    assert fourth.status == 200
    assert fourth.body["id"] == uid


async def test_scripted_hang_never_answers_and_does_not_delay_shutdown() -> None:
    """A hang makes the client time out; leaving serve() still returns promptly."""
    async with running_api() as (running, api):
        uid = first_user(running.sim)
        running.sim.script(uid, "PUT", [ScriptedResponse(hang=True)])
        with pytest.raises(TimeoutError):
            await api.request(
                "PUT",
                f"{USERS}/{uid}?v=4.0",
                json={},
                headers={"If-Match": "1"},
                timeout=aiohttp.ClientTimeout(total=0.2),
            )
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert running.sim.stats.hangs == 1


async def test_faults_change_live_over_http_and_state_is_served() -> None:
    """POST /_sim/faults changes faults live (unknown names: 400); /_sim/state is the snapshot."""
    async with running_api(SimConfig(users=4)) as (running, api):
        changed = await api.request("POST", "/_sim/faults", json={"throttle_fraction": 1.0})
        throttled = await api.get(first_user(running.sim))
        unknown = await api.request("POST", "/_sim/faults", json={"users": 9})
        invalid = await api.request("POST", "/_sim/faults", json={"error_fraction": 2})
        state = await api.request("GET", "/_sim/state")
    assert changed.status == 200
    assert changed.body["throttle_fraction"] == 1.0
    assert throttled.status == 429
    assert unknown.status == 400
    assert "users" in unknown.body["message"]
    assert invalid.status == 400
    assert state.body["users"] == running.sim.snapshot()["users"]
    assert state.body["revision"] == running.sim.revision


async def test_faults_are_deterministic_for_a_seed() -> None:
    """The same seed gives the same sequence of injected faults."""

    async def statuses(seed: int) -> list[int]:
        config = SimConfig(users=3, seed=seed, error_fraction=0.3, throttle_fraction=0.2)
        async with running_api(config) as (running, api):
            uid = first_user(running.sim)
            return [(await api.get(uid)).status for _ in range(30)]

    assert await statuses(4) == await statuses(4)
    assert await statuses(4) != await statuses(5)


# ---------------------------------------------------------------------- auth, tokens, CSDS


async def test_tokens_are_issued_checked_refused_and_expire() -> None:
    """Client credentials give a JWT-shaped Bearer token; a wrong secret is 401; tokens expire."""
    clock = FakeClock()
    config = SimConfig(users=3, token_ttl=60, require_auth=True, bearer_tokens=("static-tok",))
    token_path = f"/sentinel/api/v2/account/{ACCOUNT}/app/token"
    form = {
        "client_id": "demo-client",
        "client_secret": "demo-secret",
        "grant_type": "client_credentials",
    }
    async with running_api(config, clock=clock) as (running, api):
        uid = first_user(running.sim)
        issued = await api.request("POST", token_path, data=form)
        wrong = await api.request("POST", token_path, data={**form, "client_secret": "nope"})
        grant = await api.request("POST", token_path, data={**form, "grant_type": "password"})
        token = issued.body["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        ok = await api.get(uid, headers=bearer)
        anonymous = await api.get(uid)
        forged = await api.get(uid, headers={"Authorization": "Bearer not-a-token"})
        static = await api.get(uid, headers={"Authorization": "Bearer static-tok"})
        clock.advance(60)
        expired = await api.get(uid, headers=bearer)
        stats = running.sim.stats
    assert issued.status == 200
    assert (issued.body["token_type"], issued.body["expires_in"]) == ("Bearer", 60)
    claims = jwt_claims(token)
    assert claims["sub"] == "demo-client"
    assert claims["exp"] == int(clock.now)
    assert claims["jti"]
    assert (wrong.status, grant.status) == (401, 400)
    assert (ok.status, anonymous.status, forged.status, static.status) == (200, 401, 401, 200)
    assert expired.status == 401
    assert "expired" in expired.body["message"]
    assert (stats.tokens_issued, stats.tokens_refused) == (1, 2)
    assert stats.auth_schemes == {"Bearer": 4, "(none)": 1}


async def test_domain_api_points_every_service_at_this_server() -> None:
    """CSDS answers a bare host:port for known services, 404 for unknown ones or accounts."""
    async with running_api() as (running, api):
        base = f"/api/account/{ACCOUNT}/service"
        one = await api.request("GET", f"{base}/accountConfigReadWrite/baseURI.json?version=1.0")
        every = await api.request("GET", f"{base}/baseURI.json?version=1.0")
        wrong_case = await api.request(
            "GET", f"{base}/AccountConfigReadWrite/baseURI.json?version=1.0"
        )
        account = await api.request(
            "GET", "/api/account/999/service/sentinel/baseURI.json?version=1.0"
        )
    host = f"127.0.0.1:{running.port}"
    assert one.body == {"service": "accountConfigReadWrite", "account": ACCOUNT, "baseURI": host}
    assert {e["service"] for e in every.body["baseURIs"]} == {
        "accountConfigReadWrite",
        "accountConfigReadOnly",
        "sentinel",
        "agentVep",
    }
    assert all(e["baseURI"] == host for e in every.body["baseURIs"])
    assert (wrong_case.status, account.status) == (404, 404)
    assert running.sim.stats.domain_lookups["accountConfigReadWrite"] == 1
    assert running.sim.stats.requests == 0


# ---------------------------------------------------------------------- data and the CLI


def test_generated_users_are_deterministic_realistic_and_complete() -> None:
    """Same seed, same users; every appendix attribute and a nested unknown; distinct revisions."""
    first, again, other = generate_users(200, 1), generate_users(200, 1), generate_users(200, 2)
    assert first == again
    assert first != other
    assert [u["id"] for u in first] == list(range(FIRST_USER_ID, FIRST_USER_ID + 200))
    assert all(set(u) >= APPENDIX_ATTRIBUTES for u in first)
    assert all(isinstance(u["extendedAttributes"]["badges"], list) for u in first)
    assert len({u["loginName"] for u in first}) == 200
    profiles = [tuple(u["profileIds"]) for u in first]
    assert profiles.count((schema.AGENT_PROFILE,)) > 140
    assert {(schema.ADMIN_PROFILE,), (schema.AGENT_MANAGER_PROFILE,)} <= set(profiles)
    agents = [u for u in first if schema.AGENT_PROFILE in u["profileIds"]]
    assert all(isinstance(u["memberOf"]["agentGroupId"], int) for u in agents)
    assert any(u["maxAsyncChats"] is None for u in agents)
    sim = Simulator(SimConfig(users=200, seed=1))
    assert len(set(sim.revisions.values())) == 200
    assert sim.revision == max(sim.revisions.values())


def test_a_state_dump_is_a_valid_seed_file(tmp_path: Path) -> None:
    """--state-out output loads back as --seed-file with the same users and revisions."""
    sim = Simulator(SimConfig(users=30, seed=9))
    sim.edit_as_other_admin()
    dump = tmp_path / "state.json"
    dump.write_text(json.dumps(sim.snapshot()))
    loaded = Simulator(SimConfig(seed_file=dump))
    assert loaded.users == sim.users
    assert loaded.revisions == sim.revisions
    assert loaded.revision == sim.revision


def test_samples_seed_json_holds_300_generated_users() -> None:
    """samples/seed.json is the generator's output for 300 users, seed 0."""
    seeded = load_seed_file(REPO / "samples" / "seed.json", 0)
    assert list(seeded.users.values()) == generate_users(300, 0)


async def test_simulate_command_serves_until_sigterm_and_writes_state(tmp_path: Path) -> None:
    """`python -m bulkusers simulate` announces its URL, serves, and dumps its state on SIGTERM."""
    port_file, state_out = tmp_path / "port", tmp_path / "state.json"
    command = [
        sys.executable, "-m", "bulkusers", "simulate", "--port", "0", "--users", "12",
        "--port-file", str(port_file), "--state-out", str(state_out),
    ]  # fmt: skip
    process = await anyio.open_process(command)
    try:
        assert process.stdout is not None
        with anyio.fail_after(15):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        port = int(port_file.read_text())
        assert (
            line.decode()
            == f"bulkusers simulator: http://127.0.0.1:{port} (account 123, 12 users)\n"
        )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}{USERS}/{FIRST_USER_ID}?v=4.0"
            async with session.get(url) as reply:
                assert reply.status == 200
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    state = json.loads(state_out.read_text())
    assert len(state["users"]) == 12
    assert state["stats"]["gets"] == 1
    assert state["users"][0]["fullName"] != ""
