"""An in-memory Users API for tests of the pure engine (the real HTTP path is tested
against the simulator in the end-to-end tests)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel

from bulkusers.client import Reply

Hook = Callable[["FakeApi", str, int], Reply | None]


class FakeApi:
    """Per-user (or account-wide) revisions and If-Match checks, plus scripted faults.

    `faults` maps (method, user_id) to a list of fault names consumed one per call:
    "503", "drop", "lost" (PUT applied, answer lost), "429", "401", "404", "400", "edit"
    (another admin edits `description` just before this call is handled)."""

    def __init__(self, users: Mapping[int, dict[str, Any]], *, collection: bool = False) -> None:
        self.users = {uid: copy.deepcopy(u) for uid, u in users.items()}
        self.revision = 100
        self.user_revision = {uid: 100 for uid in users}
        self.collection = collection
        self.faults: dict[tuple[str, int], list[str]] = {}
        self.calls: list[tuple[str, int]] = []
        self.puts_by_user: dict[int, list[dict[str, Any]]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.edits = 0
        self.outage_calls = 0  # this many next calls, any user, answer 503
        self.down = False  # every call answers 503

    def _current(self, uid: int) -> str:
        return str(self.revision if self.collection else self.user_revision[uid])

    def _fault(self, method: str, uid: int) -> str | None:
        if self.down:
            return "503"
        if self.outage_calls > 0:
            self.outage_calls -= 1
            return "503"
        queue = self.faults.get((method, uid))
        return queue.pop(0) if queue else None

    def other_admin_edit(self, uid: int) -> None:
        self.edits += 1
        self.users[uid]["description"] = f"edited by other admin #{self.edits}"
        self._bump(uid)

    def _bump(self, uid: int) -> None:
        self.revision += 1
        self.user_revision[uid] = self.revision

    @contextlib.asynccontextmanager
    async def _in_flight(
        self, method: str, user_id: int
    ) -> AsyncIterator[tuple[Reply | None, str | None]]:
        """Count the request in flight, yield to other tasks, play its scripted fault: yields
        the early answer (a fault or 404) or None to go on, and the fault played."""
        self.calls.append((method, user_id))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await anyio.lowlevel.checkpoint()
            fault = self._fault(method, user_id)
            if fault == "edit":
                self.other_admin_edit(user_id)
            early = _simple_fault(fault)
            if early is None and user_id not in self.users:
                early = Reply(status=404, body=b'{"message": "User not found"}')
            yield early, fault
        finally:
            self.in_flight -= 1

    async def get_user(self, user_id: int) -> Reply:
        async with self._in_flight("GET", user_id) as (early, _):
            if early is not None:
                return early
            entity = copy.deepcopy(self.users[user_id])
            return Reply(status=200, revision=self._current(user_id), entity=entity)

    async def put_user(self, user_id: int, entity: Mapping[str, Any], revision: str) -> Reply:
        async with self._in_flight("PUT", user_id) as (early, fault):
            if early is not None:
                return early
            if revision != self._current(user_id):
                return Reply(status=409, body=b'{"message": "stale revision"}')
            stored = json.loads(json.dumps(entity))  # what went over the wire
            self.users[user_id] = stored
            self.puts_by_user.setdefault(user_id, []).append(stored)
            self._bump(user_id)
            if fault == "lost":
                return Reply(status=None, problem="connection failed (ServerDisconnectedError)")
            return Reply(status=200, revision=self._current(user_id))

    def lose_put_answer(self, user_id: int) -> None:
        """The next PUT for this user is applied but its answer is lost."""
        self.faults.setdefault(("PUT", user_id), []).append("lost")


def _simple_fault(fault: str | None) -> Reply | None:
    if fault is None or fault in ("ok", "lost", "edit"):
        return None
    return _FAULTS[fault]


_FAULTS: dict[str, Reply] = {
    "503": Reply(status=503, body=b"<html><body><h1>503 Service Unavailable</h1></body></html>"),
    "drop": Reply(status=None, problem="connection failed (ServerDisconnectedError)"),
    "429": Reply(status=429, retry_after=2.0, body=b'{"message": "Too many requests"}'),
    "401": Reply(status=401, body=b'{"message": "Unauthorized"}'),
    "404": Reply(status=404, body=b'{"message": "User not found"}'),
    "403": Reply(status=403, body=b'{"message": "Forbidden"}'),
    "400": Reply(status=400, body=b'{"message": "maxChats must be >= 0"}'),
}


def make_user(uid: int, **overrides: Any) -> dict[str, Any]:
    """A plausible user entity with an attribute bulkusers does not know."""
    user: dict[str, Any] = {
        "id": uid,
        "deleted": False,
        "loginName": f"agent.{uid}",
        "fullName": "",
        "nickname": f"Agent {uid}",
        "isEnabled": True,
        "maxChats": 3,
        "email": f"agent{uid}@example.com",
        "skillIds": [11, 12],
        "profileIds": [3],
        "memberOf": {"agentGroupId": 7, "assignmentDate": "2025-01-02 03:04:05"},
        "description": "original",
        "extendedAttributes": {"costCenter": "CC-17", "badges": ["gold"]},
    }
    user.update(overrides)
    return user
