"""Apply a parsed row to a user entity as received: change only what the row names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulkusers.changes import Change


@dataclass(frozen=True, slots=True)
class Merged:
    """The body to PUT and the attributes whose value it changes."""

    entity: dict[str, Any]
    changed: tuple[str, ...]


def merge(entity: Mapping[str, Any], change: Change) -> Merged:
    """Return the entity with the row applied; every attribute the row does not name comes
    back exactly as received, unknown ones included."""
    raise NotImplementedError
