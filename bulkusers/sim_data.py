"""Realistic, seed-deterministic user entities for the simulator, and loading them from a file."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bulkusers import schema

#: First id of generated users: LivePerson user ids are longs, so they should look like it.
FIRST_USER_ID = 10_000_001

#: LivePerson's root agent group is -1; the rest look like real group ids.
AGENT_GROUPS: tuple[int, ...] = (
    -1,
    2_310_456_712,
    2_310_456_813,
    2_310_457_114,
    2_310_457_415,
    2_310_458_016,
    2_310_458_317,
    2_310_459_218,
)

#: The pool skillIds are drawn from.
SKILL_POOL: tuple[int, ...] = tuple(3_904_118_210 + 1_103 * k for k in range(20))

LOB_POOL: tuple[int, ...] = (1_730_011, 1_730_012, 1_730_013, 1_730_014)
PERMISSION_GROUP_POOL: tuple[int, ...] = (4_410_101, 4_410_102, 4_410_103)

FIRST_NAMES: tuple[str, ...] = (
    "Maya", "Liam", "Noa", "Ethan", "Aisha", "Diego", "Yuki", "Omar", "Sofia", "Lucas",
    "Priya", "Mateo", "Hannah", "Kwame", "Elena", "Jonas", "Zara", "Tomás", "Ingrid", "Ravi",
    "Chloé", "Amir", "Leila", "Marcus", "Ana", "Kenji", "Fatima", "Oliver", "Nadia", "Samuel",
    "Mei", "Daniel", "Isabel", "Tariq", "Grace", "Felix", "Amara", "Hugo", "Lena", "Arjun",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Chen", "Patel", "Garcia", "Smith", "Kim", "Nguyen", "Cohen", "Müller", "Okafor", "Rossi",
    "Silva", "Haddad", "Larsen", "Ivanova", "Tanaka", "O'Brien", "Dubois", "Mensah", "Kowalski",
    "Fernández", "Novak", "Andersson", "Rahman", "Levi", "Costa", "Yilmaz", "Schmidt", "Park",
)  # fmt: skip
DESCRIPTIONS: tuple[str, ...] = (
    "", "", "", "Tier 1 support", "Billing specialist", "Night shift", "Spanish queue",
    "VIP escalations", "Onboarding buddy", "Team lead, EMEA",
)  # fmt: skip
BADGES: tuple[str, ...] = ("csat-star", "mentor", "fast-resolver", "bilingual", "veteran")

#: Generated dates fall in 2025, like an account that has been in use for a while.
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class SeedUsers:
    """Entities with their revisions, and the account revision they imply."""

    users: dict[int, dict[str, Any]]
    revisions: dict[int, int]
    account_revision: int


def date_text(moment: datetime) -> str:
    """The API's date format, `yyyy-mm-dd hh:mm:ss`."""
    return moment.strftime(_DATE_FORMAT)


def generate_users(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` plausible users, always the same ones for the same seed."""
    rng = random.Random(f"bulkusers-sim-users:{seed}")
    return [_generate_user(rng, index) for index in range(1, count + 1)]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _random_date(rng: random.Random, *, before_days: int = 330) -> str:
    return date_text(_EPOCH + timedelta(seconds=rng.randrange(before_days * 86_400)))


def _group(rng: random.Random, group_id: int) -> dict[str, Any]:
    return {"agentGroupId": group_id, "assignmentDate": _random_date(rng)}


def _role(rng: random.Random) -> tuple[str, list[int]]:
    draw = rng.random()
    if draw < 0.04:
        return "admin", [schema.ADMIN_PROFILE]
    if draw < 0.10:
        return "manager", [schema.AGENT_MANAGER_PROFILE]
    if draw < 0.16:
        return "manager", [schema.AGENT_MANAGER_PROFILE, schema.AGENT_PROFILE]
    return "agent", [schema.AGENT_PROFILE]


def _generate_user(rng: random.Random, index: int) -> dict[str, Any]:
    role, profiles = _role(rng)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    is_agent = schema.AGENT_PROFILE in profiles
    is_manager = schema.AGENT_MANAGER_PROFILE in profiles
    enabled = rng.random() < 0.93
    pwd_changed = _random_date(rng, before_days=200)
    user: dict[str, Any] = {
        "id": FIRST_USER_ID + index - 1,
        "pid": f"{rng.getrandbits(128):032x}",
        "deleted": False,
        "loginName": f"{role}.{index:04d}",
        "fullName": f"{first} {last}",
        "nickname": first,
        "isEnabled": enabled,
        "disabledManually": not enabled,
        "maxChats": rng.randint(2, 8) if is_agent else 0,
        "maxAsyncChats": (rng.choice([None, 5, 10, 15, 20]) if is_agent else None),
        "email": f"{_ascii(first)}.{_ascii(last)}{index}@example.com",
        "skillIds": sorted(rng.sample(SKILL_POOL, rng.randint(1, 5))) if is_agent else [],
        "profileIds": profiles,
        "lobIds": sorted(rng.sample(LOB_POOL, rng.randint(0, 2))),
        "permissionGroups": sorted(rng.sample(PERMISSION_GROUP_POOL, rng.randint(0, 1))),
        "memberOf": _group(rng, rng.choice(AGENT_GROUPS)) if is_agent else None,
        "managerOf": (
            [_group(rng, g) for g in sorted(rng.sample(AGENT_GROUPS, rng.randint(1, 3)))]
            if is_manager
            else []
        ),
        "changePwdNextLogin": rng.random() < 0.05,
        "pictureId": "",
        "pictureUrl": f"https://avatars.example.com/{index:05d}.png" if rng.random() < 0.6 else "",
        "backgndImgUri": "",
        "pnCertName": "",
        "description": rng.choice(DESCRIPTIONS),
        "mobileNumber": f"+1 555 01{rng.randrange(100):02d}" if rng.random() < 0.5 else "",
        "employeeId": f"E{rng.randrange(10_000, 100_000)}",
        "isApiUser": False,
        "userTypeId": 1,
        "dateUpdated": max(_random_date(rng), pwd_changed),
        "lastPwdChangeDate": pwd_changed,
        # Unknown to bulkusers on purpose: it must round-trip untouched.
        "extendedAttributes": {
            "costCenter": f"CC-{rng.randint(10, 40)}",
            "badges": sorted(rng.sample(BADGES, rng.randint(0, 3))),
            "shift": {"start": rng.choice(["06:00", "08:00", "14:00", "22:00"]), "hours": 8},
        },
    }
    return user


def assign_revisions(
    users: Iterable[dict[str, Any]], seed: int, *, given: dict[int, int] | None = None
) -> SeedUsers:
    """Give each user a distinct revision (kept from `given` where known); account = the max."""
    by_id = {int(user["id"]): user for user in users}
    revisions = dict(given or {})
    missing = [uid for uid in sorted(by_id) if uid not in revisions]
    rng = random.Random(f"bulkusers-sim-revisions:{seed}")
    taken = set(revisions.values())
    low = max(taken, default=0) + 1
    fresh = rng.sample(range(low, low + 10 * len(missing) + 1), len(missing))
    revisions.update(zip(missing, fresh, strict=True))
    return SeedUsers(by_id, revisions, max(revisions.values(), default=0))


def load_seed_file(path: Path, seed: int) -> SeedUsers:
    """Read a list of entities or `{"users": [...]}` (a `--state-out` dump works too)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read seed users: {exc}") from exc
    entries = data.get("users") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected a JSON list of users or {{"users": [...]}}')
    users: dict[int, dict[str, Any]] = {}
    given: dict[int, int] = {}
    for position, entry in enumerate(entries, start=1):
        user = _checked_entry(path, position, entry)
        if user["id"] in users:
            raise ValueError(f"{path}: user {position}: duplicate id {user['id']}")
        revision = user.pop("revision", None)
        if isinstance(revision, int) and not isinstance(revision, bool):
            given[user["id"]] = revision
        users[user["id"]] = user
    seeded = assign_revisions(users.values(), seed, given=given)
    account_revision = data.get("revision") if isinstance(data, dict) else None
    if isinstance(account_revision, int) and account_revision > seeded.account_revision:
        return SeedUsers(seeded.users, seeded.revisions, account_revision)
    return seeded


def _checked_entry(path: Path, position: int, entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: user {position}: expected a JSON object")
    user_id = entry.get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise ValueError(f"{path}: user {position}: id must be a positive integer")
    return dict(entry)


def users_json(users: Iterable[dict[str, Any]]) -> str:
    """A readable JSON list, one user per line, as samples/seed.json is written."""
    lines = [json.dumps(user, ensure_ascii=False) for user in users]
    return "[\n" + ",\n".join(lines) + "\n]\n"


if __name__ == "__main__":  # regenerate the sample: python -m bulkusers.sim_data 300 0 > FILE
    import sys

    count, seed = (int(arg) for arg in sys.argv[1:3])
    sys.stdout.write(users_json(generate_users(count, seed)))
