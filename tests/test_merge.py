"""merge: only what the row names changes; everything else goes back exactly as received."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkusers import schema
from bulkusers.changes import Change, Edit, Op, Value
from bulkusers.merge import Merged, merge, role_warnings, same_json
from bulkusers.schema import Kind

DATE_A = "2025-03-01 09:00:00"
DATE_B = "2025-06-15 17:30:00"


def user(**overrides: Any) -> dict[str, Any]:
    """A user as GET returns it, with an attribute bulkusers does not know."""
    entity: dict[str, Any] = {
        "id": 10000001,
        "deleted": False,
        "loginName": "agent.0001",
        "fullName": "",
        "nickname": "Maya",
        "isEnabled": True,
        "maxChats": 4,
        "maxAsyncChats": None,
        "email": "maya@example.com",
        "skillIds": [11, 12, 13],
        "profileIds": [schema.AGENT_PROFILE],
        "lobIds": [],
        "memberOf": {"agentGroupId": -1, "assignmentDate": DATE_A},
        "managerOf": [],
        "passwordSh": "hash-from-get",
        "dateUpdated": "2025-07-01 10:00:00",
        "extendedAttributes": {"costCenter": "CC-12", "badges": ["mentor"]},
    }
    entity.update(overrides)
    return entity


def row(*edits: tuple[str, Op, Value]) -> Change:
    return Change(row=1, user_id=10000001, edits=tuple(Edit(a, op, v) for a, op, v in edits))


def without_password(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k != "passwordSh"}


CASES: list[tuple[str, dict[str, Any], Change, dict[str, Any], tuple[str, ...]]] = [
    # name, entity overrides, row, expected attribute values after, changed
    ("set a string", {}, row(("email", Op.SET, "m@x.io")), {"email": "m@x.io"}, ("email",)),
    ("set the same string", {}, row(("email", Op.SET, "maya@example.com")), {}, ()),
    ("clear a string", {}, row(("email", Op.SET, None)), {"email": None}, ("email",)),
    ("set a boolean", {}, row(("isEnabled", Op.SET, False)), {"isEnabled": False}, ("isEnabled",)),
    (
        "true over 1 is a change",
        {"isEnabled": 1},
        row(("isEnabled", Op.SET, True)),
        {"isEnabled": True},
        ("isEnabled",),
    ),
    ("set a number", {}, row(("maxChats", Op.SET, 8)), {"maxChats": 8}, ("maxChats",)),
    ("clear a null number", {}, row(("maxAsyncChats", Op.SET, None)), {}, ()),
    ("clear a missing scalar", {}, row(("pictureUrl", Op.SET, None)), {}, ()),
    (
        "set a missing scalar",
        {},
        row(("pictureUrl", Op.SET, "u")),
        {"pictureUrl": "u"},
        ("pictureUrl",),
    ),
    (
        "replace a list",
        {},
        row(("skillIds", Op.SET, (13, 14))),
        {"skillIds": [13, 14]},
        ("skillIds",),
    ),
    (
        "replace with the same members reordered",
        {},
        row(("skillIds", Op.SET, (13, 11, 12))),
        {"skillIds": [11, 12, 13]},
        (),
    ),
    ("clear a list", {}, row(("skillIds", Op.SET, None)), {"skillIds": []}, ("skillIds",)),
    ("clear an empty list", {}, row(("lobIds", Op.SET, None)), {"lobIds": []}, ()),
    ("clear a missing list", {}, row(("permissionGroups", Op.SET, None)), {}, ()),
    ("clear a null list", {"lobIds": None}, row(("lobIds", Op.SET, None)), {"lobIds": None}, ()),
    (
        "add members in order, no duplicates",
        {},
        row(("skillIds", Op.ADD, (20, 12, 19))),
        {"skillIds": [11, 12, 13, 20, 19]},
        ("skillIds",),
    ),
    ("add present members", {}, row(("skillIds", Op.ADD, (12,))), {}, ()),
    (
        "add to a null list",
        {"lobIds": None},
        row(("lobIds", Op.ADD, (7,))),
        {"lobIds": [7]},
        ("lobIds",),
    ),
    (
        "add to a missing list",
        {},
        row(("permissionGroups", Op.ADD, (7,))),
        {"permissionGroups": [7]},
        ("permissionGroups",),
    ),
    (
        "remove members",
        {},
        row(("skillIds", Op.REMOVE, (11, 13))),
        {"skillIds": [12]},
        ("skillIds",),
    ),
    ("remove absent members", {}, row(("skillIds", Op.REMOVE, (99,))), {}, ()),
    ("remove from a missing list", {}, row(("permissionGroups", Op.REMOVE, (1,))), {}, ()),
    (
        "add and remove together",
        {},
        row(("skillIds", Op.ADD, (14,)), ("skillIds", Op.REMOVE, (11,))),
        {"skillIds": [12, 13, 14]},
        ("skillIds",),
    ),
    (
        "stay in the same group",
        {},
        row(("memberOf", Op.SET, -1)),
        {"memberOf": {"agentGroupId": -1, "assignmentDate": DATE_A}},
        (),
    ),
    (
        "move to another group",
        {},
        row(("memberOf", Op.SET, 2310456712)),
        {"memberOf": {"agentGroupId": 2310456712}},
        ("memberOf",),
    ),
    (
        "join a group from none",
        {"memberOf": None},
        row(("memberOf", Op.SET, 5)),
        {"memberOf": {"agentGroupId": 5}},
        ("memberOf",),
    ),
    ("leave the group", {}, row(("memberOf", Op.SET, None)), {"memberOf": None}, ("memberOf",)),
]


@pytest.mark.parametrize(
    ("overrides", "change", "expected", "changed"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_merge_cases(
    overrides: dict[str, Any],
    change: Change,
    expected: dict[str, Any],
    changed: tuple[str, ...],
) -> None:
    """Each kind of edit does what the SPEC says; equivalent values stay as received."""
    entity = user(**overrides)
    merged = merge(entity, change)
    want = without_password(entity) | expected
    assert json.dumps(merged.entity) == json.dumps(want)  # values, types and key order
    assert merged.changed == changed


MANAGED = [
    {"agentGroupId": -1, "assignmentDate": DATE_A},
    {"agentGroupId": 7, "assignmentDate": DATE_B},
]

GROUP_LIST_CASES: list[tuple[str, Change, list[dict[str, Any]], tuple[str, ...]]] = [
    (
        "replace keeps dates of groups that stay",
        row(("managerOf", Op.SET, (7, 9))),
        [MANAGED[1], {"agentGroupId": 9}],
        ("managerOf",),
    ),
    ("replace with the same groups reordered", row(("managerOf", Op.SET, (7, -1))), MANAGED, ()),
    (
        "add a group",
        row(("managerOf", Op.ADD, (9, 7))),
        [*MANAGED, {"agentGroupId": 9}],
        ("managerOf",),
    ),
    ("remove a group", row(("managerOf", Op.REMOVE, (-1, 42))), [MANAGED[1]], ("managerOf",)),
    ("clear", row(("managerOf", Op.SET, None)), [], ("managerOf",)),
]


@pytest.mark.parametrize(
    ("change", "expected", "changed"),
    [case[1:] for case in GROUP_LIST_CASES],
    ids=[case[0] for case in GROUP_LIST_CASES],
)
def test_manager_of(
    change: Change, expected: list[dict[str, Any]], changed: tuple[str, ...]
) -> None:
    """managerOf edits go by agentGroupId and keep assignment dates of groups that stay."""
    merged = merge(user(managerOf=copy.deepcopy(MANAGED)), change)
    assert merged.entity["managerOf"] == expected
    assert merged.changed == changed


def test_password_is_left_out_unless_the_row_sets_it() -> None:
    """GET's passwordSh never goes back; a row's passwordSh always does, and always counts."""
    assert "passwordSh" not in merge(user(), row(("nickname", Op.SET, "M"))).entity
    for _ in range(2):  # setting the same password again is still a change: it is unknowable
        merged = merge(user(passwordSh="new"), row(("passwordSh", Op.SET, "new")))
        assert merged.entity["passwordSh"] == "new"
        assert merged.changed == ("passwordSh",)
    cleared = merge(user(), row(("passwordSh", Op.SET, None)))
    assert cleared == Merged(entity=without_password(user()), changed=())


def test_changed_lists_attributes_in_column_order_once() -> None:
    """changed follows the row's columns and names an attribute once."""
    change = row(
        ("skillIds", Op.ADD, (20,)),
        ("email", Op.SET, "new@x.io"),
        ("nickname", Op.SET, "Maya"),
        ("skillIds", Op.REMOVE, (11,)),
        ("maxChats", Op.SET, 1),
    )
    assert merge(user(), change).changed == ("skillIds", "email", "maxChats")


def test_the_input_entity_is_never_mutated_nor_shared() -> None:
    """merge works on a copy: later edits of the body cannot reach the entity it came from."""
    entity = user(managerOf=copy.deepcopy(MANAGED))
    before = copy.deepcopy(entity)
    merged = merge(entity, row(("skillIds", Op.ADD, (99,)), ("managerOf", Op.SET, (7,))))
    assert entity == before
    merged.entity["extendedAttributes"]["badges"].append("x")
    merged.entity["managerOf"][0]["assignmentDate"] = "changed"
    assert entity == before


def test_unknown_and_read_only_attributes_go_back_as_received() -> None:
    """What bulkusers does not know (or may not set) is sent back untouched, in place."""
    entity = user(newFeature={"nested": [1, {"deep": None}]}, zzz=[True, 1.5, "x"])
    merged = merge(entity, row(("nickname", Op.SET, "M")))
    assert list(merged.entity) == [k for k in entity if k != "passwordSh"]
    for key in ("id", "deleted", "dateUpdated", "extendedAttributes", "newFeature", "zzz"):
        assert same_json(merged.entity[key], entity[key])


def test_same_json_tells_booleans_from_numbers() -> None:
    """true and 1 are different JSON, even though Python says True == 1."""
    assert same_json({"a": [1, {"b": True}]}, {"a": [1, {"b": True}]})
    assert not same_json(True, 1)
    assert not same_json([1], [True])
    assert not same_json({"a": 0}, {"a": False})
    assert not same_json({"a": 1}, {"a": 1, "b": 2})
    assert same_json(1, 1.0)


# -- role warnings ----------------------------------------------------------------------------

AGENT, MANAGER, ADMIN = schema.AGENT_PROFILE, schema.AGENT_MANAGER_PROFILE, schema.ADMIN_PROFILE
AGENT_WARNING = (
    "the user stops being an Agent (profile 3 leaves profileIds): the server will reset "
    "maxChats, maxAsyncChats, memberOf and skillIds"
)
MANAGER_WARNING = (
    "the user stops being an Agent Manager (profile 2 leaves profileIds): the server will "
    "reset managerOf"
)

ROLE_CASES: list[tuple[object, object, tuple[str, ...]]] = [
    ([AGENT], [ADMIN], (AGENT_WARNING,)),
    ([AGENT, MANAGER], [MANAGER], (AGENT_WARNING,)),
    ([AGENT, MANAGER], [AGENT], (MANAGER_WARNING,)),
    ([AGENT, MANAGER], [], (AGENT_WARNING, MANAGER_WARNING)),
    ([AGENT, MANAGER], None, (AGENT_WARNING, MANAGER_WARNING)),
    ([AGENT], [AGENT, MANAGER], ()),
    ([ADMIN], [AGENT], ()),
    ([AGENT], [AGENT], ()),
    (None, [ADMIN], ()),
]


@pytest.mark.parametrize(("before", "after", "warnings"), ROLE_CASES)
def test_role_warnings(before: object, after: object, warnings: tuple[str, ...]) -> None:
    """Losing the Agent or Agent Manager role is flagged, since the server resets attributes."""
    assert role_warnings({"profileIds": before}, {"profileIds": after}) == warnings


def test_role_warnings_follow_a_merge() -> None:
    """The warning comes from comparing GET's entity with the merged body."""
    entity = user(profileIds=[AGENT, MANAGER])
    merged = merge(entity, row(("profileIds", Op.REMOVE, (AGENT,))))
    assert role_warnings(entity, merged.entity) == (AGENT_WARNING,)


# -- properties -------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=6,
)
ids = st.integers(min_value=-3, max_value=12)  # a small range, so members collide often
dates = st.sampled_from([DATE_A, DATE_B])
group = st.builds(lambda g, d: {"agentGroupId": g, "assignmentDate": d}, ids, dates)

#: A plausible value of each kind as GET returns it; json_values now and then, since a server
#: (or a future API version) may send shapes we do not expect.
ENTITY_VALUES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.STRING: st.none() | st.text(max_size=8),
    Kind.BOOL: st.none() | st.booleans(),
    Kind.INT: st.none() | st.integers(),
    Kind.INT_LIST: st.none() | st.lists(ids, max_size=6),
    Kind.GROUP: st.none() | group,
    Kind.GROUP_LIST: st.none() | st.lists(group, max_size=4, unique_by=lambda g: g["agentGroupId"]),
}


def _known_value(kind: Kind) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes any JSON: a server (or a later API version) may
    send shapes we do not expect, and they must survive too."""
    plausible = ENTITY_VALUES[kind]
    return st.one_of(plausible, plausible, plausible, json_values)


_KNOWN_ATTRIBUTES = st.fixed_dictionaries(
    {}, optional={attribute: _known_value(kind) for attribute, kind in schema.WRITABLE.items()}
)


@st.composite
def entities(draw: st.DrawFn) -> dict[str, Any]:
    """A user: some known attributes (maybe missing or odd), unknown keys, maybe a password
    hash, in any key order."""
    entity: dict[str, Any] = {"id": draw(st.integers(min_value=1)), **draw(_KNOWN_ATTRIBUTES)}
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=4))
    for key, value in extra.items():
        entity.setdefault(key, value)
    keys = draw(st.permutations(list(entity)))
    return {key: entity[key] for key in keys}


id_tuples = st.lists(ids, min_size=1, max_size=4, unique=True).map(tuple)


def edits_for(attribute: str, kind: Kind) -> st.SearchStrategy[list[Edit]]:
    """The edits one row can make to one attribute, as the parser would produce them."""
    if attribute in schema.SECRET_ATTRIBUTES:
        return st.builds(lambda v: [Edit(attribute, Op.SET, v)], st.text(min_size=1, max_size=6))
    if kind in (Kind.INT_LIST, Kind.GROUP_LIST):
        replace = st.builds(lambda v: [Edit(attribute, Op.SET, v)], st.none() | id_tuples)
        # The parser refuses a member both added and removed, so the two sets are disjoint.
        add_remove = st.builds(
            lambda a, r: [
                Edit(attribute, Op.ADD, a),
                Edit(attribute, Op.REMOVE, tuple(m for m in r if m not in a) or (99,)),
            ],
            id_tuples,
            id_tuples,
        )
        only_add = id_tuples.map(lambda v: [Edit(attribute, Op.ADD, v)])
        only_remove = id_tuples.map(lambda v: [Edit(attribute, Op.REMOVE, v)])
        return replace | add_remove | only_add | only_remove
    values: dict[Kind, st.SearchStrategy[Value]] = {
        Kind.STRING: st.text(max_size=6),
        Kind.BOOL: st.booleans(),
        Kind.INT: st.integers(min_value=-2, max_value=5),
        Kind.GROUP: ids,
    }
    return st.builds(lambda v: [Edit(attribute, Op.SET, v)], st.none() | values[kind])


@st.composite
def changes(draw: st.DrawFn) -> Change:
    """A valid row: a few attributes, each edited the ways one row may edit it."""
    attributes = draw(st.lists(st.sampled_from(list(schema.WRITABLE)), max_size=5, unique=True))
    edits = [e for a in attributes for e in draw(edits_for(a, schema.WRITABLE[a]))]
    return Change(row=1, user_id=1, edits=tuple(edits))


#: 75 examples per property found every bug these tests caught while merge was written, and
#: keeps the unit suite within its time budget.
PROPERTY = settings(max_examples=75, deadline=None)


def sets_password(change: Change) -> bool:
    return any(e.attribute == "passwordSh" and isinstance(e.value, str) for e in change.edits)


@PROPERTY
@given(entities(), changes())
def test_merging_twice_is_merging_once(entity: dict[str, Any], change: Change) -> None:
    """Applying a row to its own result changes nothing more (a re-run is harmless)."""
    once = merge(entity, change)
    twice = merge(once.entity, change)
    assert same_json(twice.entity, once.entity)
    assert json.dumps(list(twice.entity)) == json.dumps(list(once.entity))
    assert twice.changed == (("passwordSh",) if sets_password(change) else ())


@PROPERTY
@given(entities(), changes())
def test_attributes_the_row_does_not_name_come_back_identical(
    entity: dict[str, Any], change: Change
) -> None:
    """Unknown, read-only and unnamed attributes are returned as received, in their order."""
    named = {e.attribute for e in change.edits}
    untouched = [k for k in entity if k not in named and k != "passwordSh"]
    merged = merge(entity, change)
    assert [k for k in merged.entity if k in untouched] == untouched
    for key in untouched:
        assert same_json(merged.entity[key], entity[key]), key


@PROPERTY
@given(entities(), changes())
def test_changed_is_empty_exactly_when_the_entity_is_unchanged(
    entity: dict[str, Any], change: Change
) -> None:
    """No changed attributes means the body is the entity as received (minus passwordSh)."""
    before = copy.deepcopy(entity)
    merged = merge(entity, change)
    assert same_json(entity, before)  # the input is never mutated
    unchanged = same_json(merged.entity, without_password(entity))
    assert (merged.changed == ()) == unchanged
    assert set(merged.changed) <= {e.attribute for e in change.edits}
    for attribute in merged.changed:
        if attribute != "passwordSh":
            assert not same_json(merged.entity.get(attribute), entity.get(attribute)) or (
                attribute in merged.entity
            ) != (attribute in entity)


@PROPERTY
@given(entities(), changes())
def test_password_appears_only_when_the_row_sets_it(entity: dict[str, Any], change: Change) -> None:
    """passwordSh from GET is never sent back; the row's value is."""
    merged = merge(entity, change)
    assert ("passwordSh" in merged.entity) == sets_password(change)
