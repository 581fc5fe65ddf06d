"""The changes CSV -> typed, frozen changes: header checks, cell grammar, streamed rows."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

Value = str | int | bool | tuple[int, ...] | None


class Op(enum.Enum):
    """What an edit does to its attribute."""

    SET = "set"  # replace the value; value None means clear (#N/A): null, or [] for lists
    ADD = "add"  # list attributes: add these members (no duplicates)
    REMOVE = "remove"  # list attributes: remove these members (absent ones are fine)


@dataclass(frozen=True, slots=True)
class Edit:
    """One cell of a row, parsed: set, clear, add to or remove from one attribute."""

    attribute: str
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class Change:
    """A valid row: the user it names and its edits, in column order."""

    row: int  # 1-based data-row number, header excluded
    user_id: int
    edits: tuple[Edit, ...]


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that does not parse; nothing is ever sent for it."""

    row: int
    raw_id: str  # the id cell as written, for the results file
    column: str | None
    message: str  # one line, names row and column


def read_changes(path: Path) -> Iterator[Change | InvalidRow]:
    """Stream the rows of a changes file; raise ChangesFileError before the first row if the
    file as a whole cannot be used."""
    raise NotImplementedError
