"""The HTTP client against the real simulator: what reaches the wire, and every kind of
unusable answer becoming a value with a clear problem."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from bulkusers.auth import NoAuth
from bulkusers.client import HttpUsersApi, Transport, make_session
from bulkusers.simulator import RunningSimulator, ScriptedResponse, SimConfig, serve

pytestmark = pytest.mark.anyio

UID = 10000001


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(SimConfig(users=3, seed=1)) as running:
        yield running


def api_for(running: RunningSimulator, session: object, **transport: object) -> HttpUsersApi:
    return HttpUsersApi(
        session,  # type: ignore[arg-type]
        base_url=running.url,
        account="123",
        auth=NoAuth(),
        transport=Transport(**transport),  # type: ignore[arg-type]
    )


async def test_get_reads_every_attribute_with_its_revision(sim: RunningSimulator) -> None:
    """GET asks for select=$all: unknown attributes arrive, and so does ac-revision."""
    async with make_session(concurrency=2, transport=Transport()) as session:
        reply = await api_for(sim, session).get_user(UID)
    assert reply.status == 200
    assert reply.problem is None
    assert reply.entity is not None
    stored = sim.sim.users[UID]
    assert reply.entity["extendedAttributes"] == stored["extendedAttributes"]
    assert reply.entity["fullName"] == ""  # masked by the server
    assert reply.revision == str(sim.sim.snapshot()["users"][0]["revision"])


async def test_lost_put_answer_is_not_resent_by_aiohttp(sim: RunningSimulator) -> None:
    """A PUT whose connection drops after it was applied reaches the server exactly once
    (aiohttp's hidden retry of 'idempotent' requests is off)."""
    async with make_session(concurrency=1, transport=Transport()) as session:
        api = api_for(sim, session)
        got = await api.get_user(UID)  # warm a kept-alive connection
        assert got.entity is not None
        assert got.revision is not None
        sim.sim.set_faults(lost_put_fraction=1.0)
        reply = await api.put_user(UID, {**got.entity, "maxChats": 42}, got.revision)
    assert reply.status is None
    assert reply.problem is not None
    assert reply.problem.startswith("connection failed")
    assert sim.sim.stats.puts == 1
    assert sim.sim.users[UID]["maxChats"] == 42


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (ScriptedResponse(status=200, body="<html>oops</html>", content_type="text/html",
                          headers={"ac-revision": "5"}), "answer is not JSON"),
        (ScriptedResponse(status=200, body="[1, 2]", headers={"ac-revision": "5"}),
         "answer is JSON of the wrong shape (list, not an object)"),
        (ScriptedResponse(status=200, body=json.dumps({"id": 999}), headers={"ac-revision": "5"}),
         f"answer is for user 999, not {UID}"),
        (ScriptedResponse(status=200, body=json.dumps({"id": UID})),
         "answer has no ac-revision header; refusing to PUT without If-Match"),
        (ScriptedResponse(drop=True),
         "connection failed (ServerDisconnectedError: Server disconnected)"),
    ],
)  # fmt: skip
async def test_unusable_answers_are_problems(
    sim: RunningSimulator, script: ScriptedResponse, problem: str
) -> None:
    """Bad bodies, missing revisions and dropped connections become a Reply with a problem."""
    sim.sim.script(UID, "GET", [script])
    async with make_session(concurrency=1, transport=Transport()) as session:
        reply = await api_for(sim, session).get_user(UID)
    assert reply.entity is None
    assert reply.problem == problem


async def test_huge_body_is_not_read(sim: RunningSimulator) -> None:
    """A body beyond the cap is refused instead of filling memory."""
    sim.sim.script(UID, "GET", [ScriptedResponse(status=200, body="x" * 200_000,
                                                 headers={"ac-revision": "5"})])  # fmt: skip
    async with make_session(concurrency=1, transport=Transport()) as session:
        reply = await api_for(sim, session, max_body=100_000).get_user(UID)
    assert reply.problem == "answer body larger than 100000 bytes"


async def test_server_that_never_answers_times_out(sim: RunningSimulator) -> None:
    """A connection that is accepted but never answered ends after the read timeout."""
    sim.sim.script(UID, "GET", [ScriptedResponse(hang=True)])
    transport = Transport(read_timeout=0.3)
    async with make_session(concurrency=1, transport=transport) as session:
        reply = await api_for(sim, session, read_timeout=0.3).get_user(UID)
    assert reply.status is None
    assert reply.problem == "no answer within 0.3 s"


async def test_retry_after_is_read_from_429(sim: RunningSimulator) -> None:
    """429 answers carry their Retry-After seconds."""
    sim.sim.script(
        UID, "GET", [ScriptedResponse(status=429, body="{}", headers={"Retry-After": "7"})]
    )
    async with make_session(concurrency=1, transport=Transport()) as session:
        reply = await api_for(sim, session).get_user(UID)
    assert (reply.status, reply.retry_after) == (429, 7.0)


async def test_method_override_and_version_reach_the_server(sim: RunningSimulator) -> None:
    """--method-override sends POST + X-HTTP-Method-Override: PUT; v= is the setting."""
    async with make_session(concurrency=1, transport=Transport()) as session:
        api = api_for(sim, session, method_override=True, api_version="5.0")
        got = await api.get_user(UID)
        assert got.entity is not None
        assert got.revision is not None
        put = await api.put_user(UID, {**got.entity, "nickname": "Override"}, got.revision)
    assert put.status == 200
    assert sim.sim.stats.by_method_override == {"PUT": 1}
    assert sim.sim.stats.by_version == {"5.0": 2}
    assert sim.sim.users[UID]["nickname"] == "Override"


async def test_redirects_are_not_followed(sim: RunningSimulator) -> None:
    """A 307 is answered as is: a PUT body is never re-sent to another URL."""
    target = f"{sim.url}/elsewhere"
    sim.sim.script(UID, "PUT", [ScriptedResponse(status=307, headers={"Location": target})])
    async with make_session(concurrency=1, transport=Transport()) as session:
        reply = await api_for(sim, session).put_user(UID, {"id": UID}, "1")
    assert reply.status == 307
    assert sim.sim.stats.puts == 1


class _SwapToken:
    """Sends a bad token first, a good one after the renewal the 401 asks for."""

    description = "a test token"

    def __init__(self) -> None:
        self.token = "bad"

    async def header(self) -> str | None:
        return f"Bearer {self.token}"

    async def renew(self, rejected: str | None) -> bool:
        self.token = "good"
        return True


async def test_the_re_send_after_a_401_waits_for_the_rate_limiter() -> None:
    """The request re-sent after a credential renewal takes a limiter slot like any other."""
    paced: list[int] = []

    async def pace() -> None:
        paced.append(1)

    async with serve(SimConfig(users=2, seed=1, bearer_tokens=("good",))) as running:
        async with make_session(concurrency=1, transport=Transport()) as session:
            api = HttpUsersApi(
                session,
                base_url=running.url,
                account="123",
                auth=_SwapToken(),
                pace=pace,
            )
            reply = await api.get_user(UID)
        assert running.sim.stats.by_status == {401: 1, 200: 1}
    assert reply.status == 200
    assert paced == [1]
