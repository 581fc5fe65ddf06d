"""The Users API's entity rules as pure functions: what GET shows, what PUT accepts and stores.

Masked attributes (`schema.MASKED`: fullName, employeeId) are answered as "" by GET to hide
personal data. A client that round-trips a GET therefore sends "" back, so a PUT carrying ""
for a masked attribute keeps the stored value: an empty value that only ever came from the
mask must never be what wipes real data. Any other value (including a non-empty one) is
stored; leaving a masked attribute out of the body removes it, like every other attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bulkusers import schema

#: Attributes the server manages; a PUT body cannot change them.
SERVER_OWNED: frozenset[str] = frozenset({"id", "deleted", "dateUpdated", "lastPwdChangeDate"})

#: Attributes accepted in a PUT body but never stored in (or returned with) the entity.
NEVER_STORED: frozenset[str] = frozenset({"passwordSh", "oldPassword", "confirmPassword"})

#: `select=` values that mean "every attribute".
SELECT_ALL: frozenset[str] = frozenset({"", "$all"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_group(value: object) -> bool:
    return isinstance(value, dict) and _is_int(value.get("agentGroupId"))


#: What a value of each kind must look like, and how to say so in a 400 message.
_KIND_CHECKS: Mapping[schema.Kind, tuple[Callable[[object], bool], str]] = {
    schema.Kind.STRING: (lambda v: isinstance(v, str), "a string"),
    schema.Kind.BOOL: (lambda v: isinstance(v, bool), "true or false"),
    schema.Kind.INT: (_is_int, "an integer"),
    schema.Kind.INT_LIST: (
        lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
        "a list of integers",
    ),
    schema.Kind.GROUP: (_is_group, 'an object {"agentGroupId": <id>} or null'),
    schema.Kind.GROUP_LIST: (
        lambda v: isinstance(v, list) and all(_is_group(x) for x in v),
        'a list of {"agentGroupId": <id>} objects',
    ),
}


def masked(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity as GET shows it: masked attributes answered as "" (passwords are never stored)."""
    shown = dict(entity)
    for name in schema.MASKED:
        if name in shown:
            shown[name] = ""
    return shown


def parse_select(text: str | None) -> frozenset[str] | None:
    """Attribute names a `select=` asks for, or None for all (absent or `$all`)."""
    if text is None or text.strip() in SELECT_ALL:
        return None
    names = (part.split("(", 1)[0].strip() for part in text.split(","))
    return frozenset(name for name in names if name) | {"id"}


def selected(entity: Mapping[str, Any], names: frozenset[str] | None) -> dict[str, Any]:
    """Only the selected attributes (plus id): the trap a full-replace client must avoid."""
    if names is None:
        return dict(entity)
    return {name: value for name, value in entity.items() if name in names}


def body_problem(body: object, user_id: int) -> str | None:
    """Why a PUT body is refused with 400, or None when it is acceptable."""
    if not isinstance(body, dict):
        return "the body must be a JSON object holding one user entity"
    if "id" in body and (not _is_int(body["id"]) or body["id"] != user_id):
        return f"id {body['id']!r} in the body does not match user id {user_id} in the path"
    for name in sorted(schema.REQUIRED):
        if body.get(name) is None:
            return f"{name} is required"
    for name, kind in schema.WRITABLE.items():
        value = body.get(name)
        check, expected = _KIND_CHECKS[kind]
        if value is not None and not check(value):
            return f"{name} must be {expected}, not {value!r}"
    if body.get("passwordSh") == "":
        return "passwordSh must not be empty (send null to keep the password)"
    return None


def replace_entity(old: Mapping[str, Any], body: Mapping[str, Any], *, now: str) -> dict[str, Any]:
    """The stored entity after a full-replace PUT of `body` (already checked) at time `now`."""
    new: dict[str, Any] = {"id": old["id"]}
    for name, value in body.items():
        if name not in SERVER_OWNED and name not in NEVER_STORED:
            new[name] = value
    for name in schema.MASKED:
        if new.get(name) == "" and name in old:
            new[name] = old[name]
    _date_assignments(old, new, now=now)
    _apply_disabled_manually(old, new, body)
    _apply_role_resets(old, new)
    for name in ("deleted", "lastPwdChangeDate"):
        if name in old:
            new[name] = old[name]
    new["dateUpdated"] = now
    if isinstance(body.get("passwordSh"), str):
        new["lastPwdChangeDate"] = now
    return new


def _date_assignments(old: Mapping[str, Any], new: dict[str, Any], *, now: str) -> None:
    """assignmentDate is server-owned: kept for a group that stays, `now` for a new one."""
    member = new.get("memberOf")
    if isinstance(member, dict):
        before = old.get("memberOf")
        stays = isinstance(before, dict) and before.get("agentGroupId") == member["agentGroupId"]
        date = before.get("assignmentDate") if stays and isinstance(before, dict) else None
        new["memberOf"] = {**member, "assignmentDate": date or now}
    managed = new.get("managerOf")
    if isinstance(managed, list):
        dates = {
            group.get("agentGroupId"): group.get("assignmentDate")
            for group in old.get("managerOf") or []
            if isinstance(group, dict)
        }
        new["managerOf"] = [
            {**group, "assignmentDate": dates.get(group["agentGroupId"]) or now}
            for group in managed
        ]


def _apply_disabled_manually(
    old: Mapping[str, Any], new: dict[str, Any], body: Mapping[str, Any]
) -> None:
    """If isEnabled changes and the body says nothing of disabledManually, the server sets it."""
    if "disabledManually" not in body and old.get("isEnabled") != new.get("isEnabled"):
        new["disabledManually"] = not new["isEnabled"]


def _apply_role_resets(old: Mapping[str, Any], new: dict[str, Any]) -> None:
    """Leaving the Agent role resets the agent attributes; leaving Agent Manager, managerOf."""
    before = old.get("profileIds") or []
    after = new.get("profileIds") or []
    if schema.AGENT_PROFILE in before and schema.AGENT_PROFILE not in after:
        new.update(maxChats=0, maxAsyncChats=None, memberOf=None, skillIds=[])
    if schema.AGENT_MANAGER_PROFILE in before and schema.AGENT_MANAGER_PROFILE not in after:
        new["managerOf"] = []
