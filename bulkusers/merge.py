"""Apply a parsed row to a user entity as received: change only what the row names.

PUT replaces the whole user, so the body is the entity exactly as GET returned it (unknown
attributes included) with only the row's attributes changed. An edit that would leave an
attribute equivalent to what it was (the same list members in another order, clearing what is
already empty) leaves it exactly as received, so a re-run finds nothing to do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bulkusers import schema
from bulkusers.changes import Change, Op, Value
from bulkusers.schema import Kind

#: The key of an agent group inside memberOf / managerOf objects.
GROUP_ID = "agentGroupId"


class _Missing:
    """Stands for an attribute the entity does not have (distinct from null)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class Merged:
    """The body to PUT and the attributes whose value it changes."""

    entity: dict[str, Any]
    changed: tuple[str, ...]


def same_json(a: object, b: object) -> bool:
    """JSON equality that tells true from 1 (Python's == does not), so a boolean written over
    a number counts as a change."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool | dict | list) or isinstance(b, bool | dict | list):
        return type(a) is type(b) and a == b
    return a == b


def _members(current: object) -> list[Any]:
    """A list attribute as a list: missing or null counts as empty."""
    return list(current) if isinstance(current, list) else []


def _same_members(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Lists holding the same members, order and repeats aside."""
    try:
        return set(a) == set(b)
    except TypeError:  # unhashable junk in a list we do not own: only equal lists match
        return same_json(list(a), list(b))


def _group_id(member: object) -> object:
    return member.get(GROUP_ID) if isinstance(member, dict) else member


def _set_scalar(current: object, op: Op, value: Value) -> object:
    return value


def _edit_id_list(current: object, op: Op, value: Value) -> object:
    members = _members(current)
    given = list(value) if isinstance(value, tuple) else []
    if op is Op.ADD:
        return members + [m for m in given if m not in members]
    if op is Op.REMOVE:
        return [m for m in members if m not in given]
    return members if _same_members(members, given) else given


def _edit_group(current: object, op: Op, value: Value) -> object:
    if value is None:
        return None
    if isinstance(current, dict) and same_json(current.get(GROUP_ID), value):
        return current  # already in the group: keep its assignment date
    return {GROUP_ID: value}


def _edit_group_list(current: object, op: Op, value: Value) -> object:
    groups = _members(current)
    ids = [_group_id(g) for g in groups]
    given = list(value) if isinstance(value, tuple) else []
    if op is Op.ADD:
        return groups + [{GROUP_ID: g} for g in given if g not in ids]
    if op is Op.REMOVE:
        return [g for g in groups if _group_id(g) not in given]
    if _same_members(ids, given):
        return groups
    # Groups that stay keep their object, and so their assignment date.
    kept = {gid: g for gid, g in zip(ids, groups, strict=True) if isinstance(gid, int)}
    return [kept.get(g, {GROUP_ID: g}) for g in given]


#: How an edit changes the current value of an attribute of each kind (current may be missing).
_EDITORS: Mapping[Kind, Callable[[object, Op, Value], object]] = MappingProxyType(
    {
        Kind.STRING: _set_scalar,
        Kind.BOOL: _set_scalar,
        Kind.INT: _set_scalar,
        Kind.INT_LIST: _edit_id_list,
        Kind.GROUP: _edit_group,
        Kind.GROUP_LIST: _edit_group_list,
    }
)

#: What "no value" is for each kind: missing, null and this are all the same to the user.
_EMPTY: Mapping[Kind, object] = MappingProxyType(
    {
        Kind.STRING: None,
        Kind.BOOL: None,
        Kind.INT: None,
        Kind.INT_LIST: [],
        Kind.GROUP: None,
        Kind.GROUP_LIST: [],
    }
)


def _equivalent(kind: Kind, before: object, after: object) -> bool:
    """Whether `after` says nothing new about the attribute compared with `before`."""
    empty = _EMPTY[kind]
    if before is _MISSING or before is None:
        before = empty
    return same_json(before, after)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """A deep copy of JSON data, several times faster than copy.deepcopy (no memo, no
    dispatch table); anything that is not JSON falls back to copy.deepcopy."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: v if type(v) in _SCALARS else _copy(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _copy(v) for v in value]
    return copy.deepcopy(value)


def merge(entity: Mapping[str, Any], change: Change) -> Merged:
    """Return the entity with the row applied; every attribute the row does not name comes
    back exactly as received, unknown ones included."""
    # A secret the row sets keeps its place in the body, so re-applying a row keeps the order.
    sets = {e.attribute for e in change.edits if isinstance(e.value, str)}
    result = {
        key: value if type(value) in _SCALARS else _copy(value)
        for key, value in entity.items()
        if key not in schema.SECRET_ATTRIBUTES or key in sets
    }
    for edit in change.edits:
        attribute = edit.attribute
        if attribute in schema.SECRET_ATTRIBUTES:
            if isinstance(edit.value, str):
                result[attribute] = edit.value
            continue  # null keeps the password, which leaving it out does too
        # Edits come from the parser, which knows every attribute; a stray one is a scalar.
        kind = schema.WRITABLE.get(attribute, Kind.STRING)
        current = result.get(attribute, _MISSING)
        updated = _EDITORS[kind](current, edit.op, edit.value)
        if not _equivalent(kind, current, updated):
            result[attribute] = updated
    changed = tuple(
        attribute
        for attribute in dict.fromkeys(edit.attribute for edit in change.edits)
        if _differs(attribute, entity, result)
    )
    return Merged(entity=result, changed=changed)


def _differs(attribute: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether the body changes `attribute`; a password that is sent always does, since the
    stored one cannot be read to compare."""
    if attribute in schema.SECRET_ATTRIBUTES:
        return attribute in after
    return not same_json(before.get(attribute, _MISSING), after.get(attribute, _MISSING))


def _profiles(entity: Mapping[str, Any]) -> frozenset[int]:
    members = entity.get("profileIds")
    if not isinstance(members, list):
        return frozenset()
    return frozenset(m for m in members if isinstance(m, int) and not isinstance(m, bool))


#: Roles whose loss makes the server reset attributes: (profile id, role, what it resets).
_ROLE_RESETS: tuple[tuple[int, str, str], ...] = (
    (schema.AGENT_PROFILE, "Agent", "maxChats, maxAsyncChats, memberOf and skillIds"),
    (schema.AGENT_MANAGER_PROFILE, "Agent Manager", "managerOf"),
)


def role_warnings(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    """One-line warnings for roles the change takes away: the server then resets attributes
    the row may not mention, which an admin should hear about."""
    old, new = _profiles(before), _profiles(after)
    return tuple(
        f"the user stops being an {role} (profile {profile} leaves profileIds): "
        f"the server will reset {resets}"
        for profile, role, resets in _ROLE_RESETS
        if profile in old and profile not in new
    )
