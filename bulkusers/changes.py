"""The changes CSV -> typed, frozen changes: header checks, cell grammar, streamed rows.

The file is read one physical line at a time (never whole), so a 200,000-row file runs in
constant memory. Problems with the file as a whole raise `ChangesFileError` when it is opened,
before any row; a row that does not parse becomes an `InvalidRow` value and the rest go on.
"""

from __future__ import annotations

import csv
import difflib
import enum
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO

from bulkusers import schema
from bulkusers.errors import ChangesFileError
from bulkusers.schema import Kind

Value = str | int | bool | tuple[int, ...] | None

#: Largest cell accepted, in UTF-8 bytes; no attribute of a user needs more.
MAX_CELL_BYTES = 1024 * 1024

#: Largest physical line read at once; a longer line is skipped and its row is invalid, so a
#: file without newlines cannot make the reader hold gigabytes.
MAX_LINE_BYTES = 16 * 1024 * 1024

#: What a cell holds to clear an attribute (a spreadsheet's "no value").
CLEAR = "#N/A"

#: Candidate delimiters, in order of preference when they tie.
DELIMITERS: tuple[str, ...] = (",", ";", "\t")

_JAVA_LONG_MIN = -(2**63)
_JAVA_LONG_MAX = 2**63 - 1
_SHOWN_CHARS = 40  # values quoted in messages are cut to this, so a message stays one short line


class Op(enum.Enum):
    """What an edit does to its attribute."""

    SET = "set"  # replace the value; value None means clear (#N/A): null, or [] for lists
    ADD = "add"  # list attributes: add these members (no duplicates)
    REMOVE = "remove"  # list attributes: remove these members (absent ones are fine)


#: Column-name suffixes of list attributes: `skillIds:add`, `skillIds:remove`.
_SUFFIXES: Mapping[str, Op] = MappingProxyType({"add": Op.ADD, "remove": Op.REMOVE})


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


@dataclass(frozen=True, slots=True)
class Column:
    """One header cell, checked: the attribute it edits and how."""

    name: str  # as in the header, whitespace stripped
    attribute: str
    op: Op
    kind: Kind


# -- cell grammar ---------------------------------------------------------------------------


class _Bad(Exception):
    """A cell that does not parse; the text is the reason, without row and column."""


def _shown(text: str) -> str:
    """A value quoted for a message: repr keeps it on one line, long values are cut."""
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "…"
    return repr(text)


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][+-]?[0-9]+)")


def _not_a_number(text: str) -> str:
    """Why `text` (stripped, not an ASCII integer) is not one, as specifically as we can tell."""
    foreign = next((ch for ch in text if ch.isdigit() and not ch.isascii()), None)
    if foreign is not None:
        if text == foreign:
            return f"{_shown(text)} is not an ASCII digit"
        return f"{_shown(text)}: {foreign!r} is not an ASCII digit"
    if _DECIMAL.fullmatch(text):
        if "e" in text.lower():
            # Spreadsheets turn long numbers into 1.23457E+11 unless the column is text.
            return (
                f"{_shown(text)} is not a whole number "
                "(scientific notation: format the column as text in the spreadsheet)"
            )
        return f"{_shown(text)} is not a whole number"
    if text.upper() == CLEAR:
        return f"{_shown(text)} is not a whole number (write {CLEAR} exactly to clear)"
    return f"{_shown(text)} is not a whole number"


def _parse_long(text: str) -> int:
    """A Java long written as ASCII decimal digits with an optional sign."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    # str methods, not a regex: this runs for most cells of a big file.
    if not (digits.isascii() and digits.isdigit()):
        raise _Bad(_not_a_number(text))
    # Checking the length first keeps int() away from huge digit strings.
    if len(text.lstrip("+-").lstrip("0")) > 19 or not (
        _JAVA_LONG_MIN <= (number := int(text)) <= _JAVA_LONG_MAX
    ):
        raise _Bad(f"{_shown(text)} is out of range (a whole number from -2^63 to 2^63-1)")
    return number


_BOOLS: Mapping[str, bool] = MappingProxyType(
    {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
)


def _parse_bool(text: str) -> bool:
    """true/false, yes/no, 1/0 in any case."""
    value = _BOOLS.get(text.lower())
    if value is None:
        hint = f"; write {CLEAR} exactly to clear" if text.upper() == CLEAR else ""
        raise _Bad(f"{_shown(text)} is not a boolean (use true/false, yes/no or 1/0{hint})")
    return value


def _parse_id_list(text: str) -> tuple[int, ...]:
    """`|`-separated integers; duplicates dropped keeping the first."""
    members: dict[int, None] = {}
    for part in text.split("|"):
        member = part.strip()
        if not member:
            raise _Bad(f"{_shown(text)} has an empty member (separate ids with a single '|')")
        try:
            number = _parse_long(member)
        except _Bad as exc:
            if "," in member or ";" in member:
                raise _Bad(f"{exc}; separate list members with '|'") from None
            raise
        members.setdefault(number, None)
    return tuple(members)


def _parse_group(text: str) -> int:
    """One agent group id (LivePerson's root group is -1)."""
    if "|" in text:
        raise _Bad(f"{_shown(text)}: a user is a member of one agent group only")
    return _parse_long(text)


def _parse_string(text: str) -> str:
    return text


#: How a non-empty cell of each kind is read; strings get the cell as written, others stripped.
_PARSERS: Mapping[Kind, Callable[[str], Value]] = MappingProxyType(
    {
        Kind.STRING: _parse_string,
        Kind.BOOL: _parse_bool,
        Kind.INT: _parse_long,
        Kind.INT_LIST: _parse_id_list,
        Kind.GROUP: _parse_group,
        Kind.GROUP_LIST: _parse_id_list,
    }
)


#: Near-misses of an id, in the order they are told apart; ids are identities, so none is
#: repaired (a dropped sign or zero could name somebody else).
_ID_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[+-]?0+"), "{shown}: ids are positive"),
    (re.compile(r"-[0-9]+"), "{shown}: ids are positive"),
    (re.compile(r"\+[0-9]+"), "{shown}: write the id without a sign"),
    (re.compile(r"0[0-9]+"), "{shown} has a leading zero"),
    (re.compile(r"[0-9]+(?:\s+[0-9]+)+"), "{shown} has spaces inside"),
)


def _parse_id(text: str) -> int:
    """A positive Java long in plain ASCII digits, or _Bad saying which near-miss it is."""
    if not text:
        raise _Bad("the id is empty")
    if text.isascii() and text.isdigit() and text[0] != "0":
        if len(text) > 19 or (user_id := int(text)) > schema.MAX_USER_ID:
            raise _Bad(f"too large (max {schema.MAX_USER_ID})")
        return user_id
    for pattern, reason in _ID_REFUSALS:
        if pattern.fullmatch(text):
            raise _Bad(reason.format(shown=_shown(text)))
    if any(ch.isdigit() and not ch.isascii() for ch in text) or _DECIMAL.fullmatch(text):
        raise _Bad(_not_a_number(text))
    raise _Bad(f"{_shown(text)} is not a user id")


# -- the header -----------------------------------------------------------------------------


def _valid_names() -> tuple[str, ...]:
    """Every column name a header may use, for suggestions."""
    names = [schema.KEY, *schema.WRITABLE]
    for attribute in schema.WRITABLE:
        if attribute in schema.LISTS:
            names += [f"{attribute}:{suffix}" for suffix in _SUFFIXES]
    return tuple(names)


_VALID_NAMES = _valid_names()


def suggest(name: str) -> str | None:
    """The valid column name closest to `name`, case mistakes included, or None."""
    lowered = {valid.lower(): valid for valid in _VALID_NAMES}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _did_you_mean(name: str) -> str:
    close = suggest(name)
    return f"; did you mean {close!r}?" if close else ""


@dataclass(frozen=True, slots=True)
class _Layout:
    """The checked header: where the id is and what every other column edits."""

    delimiter: str
    id_index: int
    width: int
    columns: tuple[Column | None, ...]  # by position; None for the id and unnamed columns
    names: tuple[str, ...]
    # Every column but the id: position, column (None if unnamed) and its kind's parser,
    # looked up once here rather than once per cell.
    edited: tuple[tuple[int, Column | None, Callable[[str], Value] | None], ...]
    add_and_remove: bool  # some list has both :add and :remove columns, so rows may clash


class _FileProblem(Exception):
    """A header problem, before the path is known to the message."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


def _split_header(line: str) -> tuple[str, list[str]]:
    """The delimiter and the stripped names: the candidate with an id column and most columns."""
    if "\r" in line.rstrip("\r\n"):
        # Excel's "CSV (Macintosh)" ends lines with CR alone: the whole file is one line.
        raise _FileProblem("lines end with a carriage return only; save the file as CSV UTF-8")
    best: tuple[bool, int] | None = None
    chosen = (DELIMITERS[0], [line.strip()])
    for delimiter in DELIMITERS:
        try:
            cells = next(csv.reader([line], delimiter=delimiter))
        except csv.Error as exc:
            raise _FileProblem(f"the header line is not valid CSV ({exc})") from None
        names = [cell.strip() for cell in cells]
        score = (schema.KEY in names, len(names))
        if best is None or score > best:
            best, chosen = score, (delimiter, names)
    return chosen


def _column(name: str) -> Column:
    """Check one header name (not the key) and say what it edits."""
    attribute, colon, suffix = name.partition(":")
    if attribute == schema.KEY:
        raise _FileProblem(f"the key column {schema.KEY!r} takes no suffix: {name!r}", name)
    if attribute in schema.READ_ONLY:
        raise _FileProblem(f"column {name!r} is read-only (the server sets it)", name)
    kind = schema.WRITABLE.get(attribute)
    if kind is None:
        hint = _did_you_mean(name) or " (not a user attribute that a changes file can set)"
        raise _FileProblem(f"unknown column {name!r}{hint}", name)
    if not colon:
        return Column(name, attribute, Op.SET, kind)
    op = _SUFFIXES.get(suffix)
    if op is None:
        case = f"{attribute}:{suffix.lower()}" if suffix.lower() in _SUFFIXES else None
        hint = f"; did you mean {case!r}? (names are case-sensitive)" if case else ""
        raise _FileProblem(
            f"column {name!r}: unknown suffix {':' + suffix!r} (use {attribute + ':add'!r} "
            f"or {attribute + ':remove'!r}, or {attribute!r} to replace){hint}",
            name,
        )
    if attribute not in schema.LISTS:
        raise _FileProblem(
            f"column {name!r}: {':' + suffix!r} works only on list attributes "
            f"({', '.join(sorted(schema.LISTS))}); use {attribute!r} to set the value",
            name,
        )
    return Column(name, attribute, op, kind)


def _layout(line: str) -> _Layout:
    """Check the header line; raise _FileProblem naming the first problem."""
    delimiter, names = _split_header(line)
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name and name in seen:
            raise _FileProblem(
                f"column {name!r} appears twice (columns {seen[name]} and {position})", name
            )
        seen[name] = position
    if schema.KEY not in seen:
        close = next((n for n in names if n.lower() == schema.KEY), None) or next(
            (n for n in names if suggest(n) == schema.KEY), None
        )
        hint = f"; did you mean {close!r}? (names are case-sensitive)" if close else ""
        raise _FileProblem(f"no {schema.KEY!r} column (the user id){hint}", schema.KEY)
    columns: list[Column | None] = []
    for name in names:
        # An unnamed column is tolerated (spreadsheets add one for a trailing delimiter);
        # a row that puts a value in it is refused instead.
        columns.append(None if name in ("", schema.KEY) else _column(name))
    replaced = {c.attribute for c in columns if c is not None and c.op is Op.SET}
    for column in columns:
        if column is not None and column.op is not Op.SET and column.attribute in replaced:
            raise _FileProblem(
                f"columns {column.attribute!r} and {column.name!r} cannot be combined: "
                f"{column.attribute!r} replaces the whole list",
                column.name,
            )
    id_index = names.index(schema.KEY)
    adds = {c.attribute for c in columns if c is not None and c.op is Op.ADD}
    removes = {c.attribute for c in columns if c is not None and c.op is Op.REMOVE}
    return _Layout(
        delimiter=delimiter,
        id_index=id_index,
        width=len(names),
        columns=tuple(columns),
        names=tuple(names),
        edited=tuple(
            (i, c, None if c is None else _PARSERS[c.kind])
            for i, c in enumerate(columns)
            if i != id_index
        ),
        add_and_remove=bool(adds & removes),
    )


# -- physical lines and records -------------------------------------------------------------


class _LineTooLong(Exception):
    """A physical line longer than MAX_LINE_BYTES; its rest has been skipped."""


class _Lines:
    """The data lines, decoded one at a time; counts quotes so a broken record can be skipped
    whole (its quoted newlines must not turn into rows)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.quotes = 0  # quote characters in the lines of the current record
        self.lines = 0  # physical lines in the current record
        self.at_eof = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = self._raw.readline(MAX_LINE_BYTES)
        if not data:
            self.at_eof = True
            raise StopIteration
        self.lines += 1
        self.quotes += data.count(b'"')
        if len(data) >= MAX_LINE_BYTES and not data.endswith(b"\n"):
            self._skip_line()
            raise _LineTooLong
        # surrogateescape: bytes that are not UTF-8 survive, and the row check names them.
        return data.decode("utf-8", "surrogateescape")

    def start_record(self) -> None:
        self.quotes = 0
        self.lines = 0

    def _skip_line(self) -> bool:
        """Skip to the end of the current physical line; False at the end of the file."""
        while True:
            data = self._raw.readline(MAX_LINE_BYTES)
            if not data:
                self.at_eof = True
                return False
            self.quotes += data.count(b'"')
            if data.endswith(b"\n"):
                return True

    def skip_record(self) -> None:
        """After a broken record: skip lines until its quotes balance."""
        while self.quotes % 2 and self._skip_line():
            pass


@dataclass(frozen=True, slots=True)
class _Broken:
    """A record the CSV layer could not split into cells."""

    reason: str


def _records(lines: _Lines, delimiter: str) -> Iterator[list[str] | _Broken]:
    """The non-blank records of the data part, in order; broken ones as _Broken."""
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    while True:
        lines.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LineTooLong:
            reason = f"cell too large (a line over {MAX_LINE_BYTES // 1024 // 1024} MiB)"
        except csv.Error as exc:
            reason = _csv_reason(str(exc))
        else:
            if lines.at_eof and lines.lines > 1 and lines.quotes % 2:
                yield _Broken(
                    'a quote (") opened in this row is never closed, so the rest of the file '
                    "was read as one cell"
                )
            elif (cells and cells[0].strip()) or any(cell.strip() for cell in cells):
                yield cells
            continue  # entirely blank lines (and `,,,` rows of spreadsheets) are no rows
        lines.skip_record()
        yield _Broken(reason)


def _csv_reason(message: str) -> str:
    """The csv module's complaint, said for a spreadsheet user."""
    if "field larger than field limit" in message:
        return f"cell too large (over {MAX_CELL_BYTES // 1024 // 1024} MiB)"
    if "new-line character" in message:
        return "a line break (carriage return) inside a cell that is not quoted"
    return f"not valid CSV ({message})"


def _ensure_field_limit() -> None:
    """Let the csv module hand over cells up to a line's size, so the size check is ours and
    names the column; only ever raised, since the limit is shared by the whole process."""
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)


# -- rows -----------------------------------------------------------------------------------

_SURROGATE = re.compile("[\udc80-\udcff]")


def _column_label(layout: _Layout, index: int) -> str:
    name = layout.names[index]
    return name if name else f"{index + 1} (no name)"


def _may_be_hazardous(text: str) -> bool:
    """A cheap test that clears most text (short, ASCII, no NUL) of every hazard at once."""
    return not text.isascii() or "\x00" in text or len(text) > MAX_CELL_BYTES // 4


def _cell_hazard(cell: str, secret: bool) -> str | None:
    """Why a cell cannot be used whatever its column, or None."""
    if len(cell) > MAX_CELL_BYTES // 4 and (
        len(cell) > MAX_CELL_BYTES or len(cell.encode("utf-8", "surrogateescape")) > MAX_CELL_BYTES
    ):
        return f"cell too large (over {MAX_CELL_BYTES // 1024 // 1024} MiB)"
    if "\x00" in cell:
        return "contains a NUL byte (is the file UTF-16 or binary? save it as CSV UTF-8)"
    if not cell.isascii() and (bad := _SURROGATE.search(cell)) is not None:
        if secret:
            return "the value is not UTF-8; save the file as CSV UTF-8"
        byte = ord(bad.group()) - 0xDC00
        return f"byte 0x{byte:02X} is not UTF-8; save the file as CSV UTF-8"
    return None


def _invalid(layout: _Layout, number: int, raw_id: str, index: int, reason: str) -> InvalidRow:
    label = _column_label(layout, index)
    return InvalidRow(number, raw_id, label, f"row {number}, column {label}: {reason}")


def _parse_row(layout: _Layout, number: int, cells: list[str]) -> Change | InvalidRow:
    """One record -> a Change, or an InvalidRow naming the first problem."""
    id_index = layout.id_index
    raw_id = cells[id_index] if id_index < len(cells) else ""
    if _may_be_hazardous(raw_id) and _cell_hazard(raw_id, secret=False) is not None:
        raw_id = ""  # not fit for the results file
    if len(cells) != layout.width:
        return InvalidRow(
            number,
            raw_id,
            None,
            f"row {number} has {len(cells)} cells; the header has {layout.width}",
        )
    joined = "".join(cells)
    if not joined.isascii() or "\x00" in joined or len(joined) > MAX_CELL_BYTES // 4:
        for index, cell in enumerate(cells):
            column = layout.columns[index]
            secret = column is not None and column.attribute in schema.SECRET_ATTRIBUTES
            hazard = _cell_hazard(cell, secret)
            if hazard is not None:
                return _invalid(layout, number, raw_id, index, hazard)
    try:
        user_id = _parse_id(raw_id.strip())
    except _Bad as exc:
        return _invalid(layout, number, raw_id, id_index, str(exc))
    edits: list[Edit] = []
    for index, column, parse in layout.edited:
        cell = cells[index]
        text = cell.strip()
        if not text:
            continue
        if column is None or parse is None:
            reason = f"{_shown(text)} is in a column with no name in the header"
            return _invalid(layout, number, raw_id, index, reason)
        try:
            edits.append(_edit(column, parse, cell, text))
        except _Bad as exc:
            return _invalid(layout, number, raw_id, index, str(exc))
    clash = _add_remove_clash(edits) if layout.add_and_remove else None
    if clash is not None:
        attribute, member = clash
        index = layout.names.index(f"{attribute}:remove")
        return _invalid(layout, number, raw_id, index, f"{member} is both added and removed")
    return Change(row=number, user_id=user_id, edits=tuple(edits))


def _edit(column: Column, parse: Callable[[str], Value], cell: str, text: str) -> Edit:
    """One non-empty cell -> its edit."""
    if text == CLEAR:
        if column.op is not Op.SET:
            raise _Bad(
                f"{CLEAR} (clear) cannot be used in an :{column.op.value} column; "
                f"put it in a {column.attribute!r} column to empty the list"
            )
        if column.attribute in schema.SECRET_ATTRIBUTES:
            raise _Bad(f"{CLEAR} cannot clear a password; leave the cell empty to keep it")
        return Edit(column.attribute, Op.SET, None)
    try:
        # Strings are taken as written: a space may be meant; other kinds ignore padding.
        value = parse(cell if parse is _parse_string else text)
    except _Bad:
        if column.attribute in schema.SECRET_ATTRIBUTES:
            raise _Bad("the value is not valid") from None
        raise
    return Edit(column.attribute, column.op, value)


def _add_remove_clash(edits: list[Edit]) -> tuple[str, int] | None:
    """A member that one row both adds to and removes from a list, or None."""
    added: dict[str, set[int]] = {}
    for edit in edits:
        if edit.op is Op.ADD and isinstance(edit.value, tuple):
            added.setdefault(edit.attribute, set()).update(edit.value)
    for edit in edits:
        if edit.op is Op.REMOVE and isinstance(edit.value, tuple):
            both = [m for m in edit.value if m in added.get(edit.attribute, ())]
            if both:
                return edit.attribute, both[0]
    return None


# -- opening a file -------------------------------------------------------------------------

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ChangesFileError("no such file", path=str(path)) from None
    except IsADirectoryError:
        raise ChangesFileError("is a directory, not a CSV file", path=str(path)) from None
    except OSError as exc:
        raise ChangesFileError(
            f"cannot read the file ({exc.strerror or exc})", path=str(path)
        ) from None


def _header_line(raw: BinaryIO) -> str:
    """The first non-blank line, decoded; raise _FileProblem if there is none or it is not
    UTF-8."""
    first = True
    while True:
        data = raw.readline(MAX_LINE_BYTES)
        if first and data.startswith(_UTF16_BOMS):
            raise _FileProblem("the file is UTF-16; save it as CSV UTF-8")
        if first and data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM) :]
        first = False
        if not data:
            raise _FileProblem("the file is empty (no header line)")
        if len(data) >= MAX_LINE_BYTES and not data.endswith(b"\n"):
            raise _FileProblem(f"the header line is over {MAX_LINE_BYTES // 1024 // 1024} MiB")
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = data[exc.start]
            raise _FileProblem(
                f"the header is not UTF-8 (byte 0x{byte:02X} at position {exc.start + 1}); "
                "save the file as CSV UTF-8"
            ) from None
        if "\x00" in line:
            raise _FileProblem("the header contains NUL bytes; save the file as CSV UTF-8")
        if line.strip():
            return line


class ChangesReader:
    """An open changes file whose header has been checked; iterating yields its rows in file
    order, once. Close it (or use it as a context manager) to release the file."""

    def __init__(self, path: Path, raw: BinaryIO, layout: _Layout) -> None:
        self.path = path
        self._raw = raw
        self._layout = layout
        self._rows = self._iterate()

    @property
    def delimiter(self) -> str:
        """The delimiter found in the header."""
        return self._layout.delimiter

    @property
    def columns(self) -> tuple[Column, ...]:
        """The attribute columns in header order (the id column and unnamed ones left out)."""
        return tuple(c for c in self._layout.columns if c is not None)

    def __iter__(self) -> Iterator[Change | InvalidRow]:
        return self._rows

    def _iterate(self) -> Iterator[Change | InvalidRow]:
        _ensure_field_limit()
        layout = self._layout
        try:
            records = _records(_Lines(self._raw), layout.delimiter)
            for number, record in enumerate(records, start=1):
                if isinstance(record, _Broken):
                    yield InvalidRow(number, "", None, f"row {number}: {record.reason}")
                else:
                    yield _parse_row(layout, number, record)
        finally:
            self.close()

    def close(self) -> None:
        """Release the file; rows not yet read are not read."""
        self._raw.close()

    @property
    def closed(self) -> bool:
        """Whether the file has been released."""
        return self._raw.closed

    def __enter__(self) -> ChangesReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_changes(path: Path) -> ChangesReader:
    """Open a changes file and check its header now, so a file that cannot be used at all
    raises ChangesFileError before anything is read or sent."""
    raw = _open(path)
    try:
        layout = _layout(_header_line(raw))
    except _FileProblem as exc:
        raw.close()
        raise ChangesFileError(str(exc), path=str(path), column=exc.column) from None
    except BaseException:
        raw.close()
        raise
    return ChangesReader(path, raw, layout)


def read_changes(path: Path) -> Iterator[Change | InvalidRow]:
    """Stream the rows of a changes file; raise ChangesFileError before the first row if the
    file as a whole cannot be used."""
    reader = open_changes(path)  # eager: the header is checked on the call, not on first next()
    return _closing(reader)


def _closing(reader: ChangesReader) -> Iterator[Change | InvalidRow]:
    with reader:
        yield from reader


def count_rows(path: Path) -> int:
    """The number of rows `read_changes` yields, without parsing cells: a progress total."""
    with open_changes(path) as reader:
        _ensure_field_limit()
        return sum(1 for _ in _records(_Lines(reader._raw), reader.delimiter))


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes, streamed: ties a results file to this exact input."""
    digest = hashlib.sha256()
    with _open(path) as raw:
        while chunk := raw.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
