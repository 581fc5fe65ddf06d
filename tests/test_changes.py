"""The changes CSV: header checks, the cell grammar, bad rows as values, streaming."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from bulkusers.changes import (
    Change,
    Column,
    Edit,
    InvalidRow,
    Op,
    count_rows,
    fingerprint,
    open_changes,
    read_changes,
)
from bulkusers.errors import ChangesFileError
from bulkusers.schema import Kind

MB = 1024 * 1024


def write(tmp_path: Path, content: str | bytes, name: str = "changes.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def rows(path: Path) -> list[Change | InvalidRow]:
    return list(read_changes(path))


def one(tmp_path: Path, header: str, row: str) -> Change | InvalidRow:
    """The single item of a file holding `header` and one data row."""
    items = rows(write(tmp_path, f"{header}\n{row}\n"))
    assert len(items) == 1
    return items[0]


def edits_of(item: Change | InvalidRow) -> tuple[Edit, ...]:
    assert isinstance(item, Change), item
    return item.edits


def message_of(item: Change | InvalidRow) -> str:
    assert isinstance(item, InvalidRow), item
    return item.message


# -- the cell grammar -------------------------------------------------------------------------

GRAMMAR: list[tuple[str, str, tuple[Edit, ...]]] = [
    # column, cell as written in the CSV, the edits it makes
    ("email", "", ()),
    ("email", "   ", ()),
    ("maxChats", "", ()),
    ("skillIds:add", " ", ()),
    ("email", "#N/A", (Edit("email", Op.SET, None),)),
    ("email", "  #N/A ", (Edit("email", Op.SET, None),)),
    ("maxChats", "#N/A", (Edit("maxChats", Op.SET, None),)),
    ("isEnabled", "#N/A", (Edit("isEnabled", Op.SET, None),)),
    ("skillIds", "#N/A", (Edit("skillIds", Op.SET, None),)),
    ("memberOf", "#N/A", (Edit("memberOf", Op.SET, None),)),
    ("managerOf", "#N/A", (Edit("managerOf", Op.SET, None),)),
    ("nickname", " Bob ", (Edit("nickname", Op.SET, " Bob "),)),
    ("nickname", '"Smith, Jo"', (Edit("nickname", Op.SET, "Smith, Jo"),)),
    ("nickname", '"say ""hi"""', (Edit("nickname", Op.SET, 'say "hi"'),)),
    ("nickname", "#n/a", (Edit("nickname", Op.SET, "#n/a"),)),
    ("description", "Zoë 日本 ✓", (Edit("description", Op.SET, "Zoë 日本 ✓"),)),
    ("isEnabled", "true", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "TRUE", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "True", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "false", (Edit("isEnabled", Op.SET, False),)),
    ("isEnabled", "FALSE", (Edit("isEnabled", Op.SET, False),)),
    ("isEnabled", "yes", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "Yes", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "no", (Edit("isEnabled", Op.SET, False),)),
    ("isEnabled", "NO", (Edit("isEnabled", Op.SET, False),)),
    ("isEnabled", "1", (Edit("isEnabled", Op.SET, True),)),
    ("isEnabled", "0", (Edit("isEnabled", Op.SET, False),)),
    ("isEnabled", " true ", (Edit("isEnabled", Op.SET, True),)),
    ("maxChats", "5", (Edit("maxChats", Op.SET, 5),)),
    ("maxChats", " 12 ", (Edit("maxChats", Op.SET, 12),)),
    ("maxChats", "-3", (Edit("maxChats", Op.SET, -3),)),
    ("maxChats", "+7", (Edit("maxChats", Op.SET, 7),)),
    ("maxChats", "007", (Edit("maxChats", Op.SET, 7),)),
    ("maxChats", "0", (Edit("maxChats", Op.SET, 0),)),
    ("maxChats", "9223372036854775807", (Edit("maxChats", Op.SET, 2**63 - 1),)),
    ("maxChats", "-9223372036854775808", (Edit("maxChats", Op.SET, -(2**63)),)),
    ("skillIds", "5", (Edit("skillIds", Op.SET, (5,)),)),
    ("skillIds", "1|2|3", (Edit("skillIds", Op.SET, (1, 2, 3)),)),
    ("skillIds", " 3 | 1 ", (Edit("skillIds", Op.SET, (3, 1)),)),
    ("skillIds", "3|1|3|1", (Edit("skillIds", Op.SET, (3, 1)),)),
    ("profileIds", "3", (Edit("profileIds", Op.SET, (3,)),)),
    ("lobIds", "1730011|1730012", (Edit("lobIds", Op.SET, (1730011, 1730012)),)),
    ("permissionGroups", "4410101", (Edit("permissionGroups", Op.SET, (4410101,)),)),
    ("skillIds:add", "1|2", (Edit("skillIds", Op.ADD, (1, 2)),)),
    ("skillIds:remove", "7", (Edit("skillIds", Op.REMOVE, (7,)),)),
    ("memberOf", "-1", (Edit("memberOf", Op.SET, -1),)),
    ("memberOf", "2310456712", (Edit("memberOf", Op.SET, 2310456712),)),
    ("managerOf", "-1|2310456712", (Edit("managerOf", Op.SET, (-1, 2310456712)),)),
    ("managerOf:add", "2310456813", (Edit("managerOf", Op.ADD, (2310456813,)),)),
    ("managerOf:remove", "-1", (Edit("managerOf", Op.REMOVE, (-1,)),)),
    ("passwordSh", "s3cret!", (Edit("passwordSh", Op.SET, "s3cret!"),)),
]


@pytest.mark.parametrize(("column", "cell", "expected"), GRAMMAR)
def test_cell_grammar(tmp_path: Path, column: str, cell: str, expected: tuple[Edit, ...]) -> None:
    """Each cell spelling reads as the documented edit; empty cells make no edit."""
    item = one(tmp_path, f"id,{column}", f"42,{cell}")
    assert item == Change(row=1, user_id=42, edits=expected)


def test_edits_come_in_column_order_and_only_for_non_empty_cells(tmp_path: Path) -> None:
    """A row's edits follow the header order; empty cells are left out."""
    header = "email,id,skillIds:remove,nickname,skillIds:add,maxChats"
    item = one(tmp_path, header, "a@x.io,42,5,,6|7,3")
    assert edits_of(item) == (
        Edit("email", Op.SET, "a@x.io"),
        Edit("skillIds", Op.REMOVE, (5,)),
        Edit("skillIds", Op.ADD, (6, 7)),
        Edit("maxChats", Op.SET, 3),
    )


def test_a_row_with_only_an_id_is_a_change_without_edits(tmp_path: Path) -> None:
    """An id with all other cells empty is valid and edits nothing (it will end unchanged)."""
    assert one(tmp_path, "id,email,maxChats", "42,,") == Change(row=1, user_id=42, edits=())


ID_CELLS: list[tuple[str, int]] = [
    ("42", 42),
    (" 42 ", 42),
    ("10000001", 10000001),
    ("9223372036854775807", 2**63 - 1),
]


@pytest.mark.parametrize(("cell", "user_id"), ID_CELLS)
def test_valid_ids(tmp_path: Path, cell: str, user_id: int) -> None:
    """Ids are plain positive decimal numbers; surrounding whitespace is dropped."""
    item = one(tmp_path, "id,email", f"{cell},a@x.io")
    assert isinstance(item, Change)
    assert item.user_id == user_id


BAD_IDS: list[tuple[str, str]] = [
    ("12.0", "row 1, column id: '12.0' is not a whole number"),
    ("-5", "row 1, column id: '-5': ids are positive"),
    ("0", "row 1, column id: '0': ids are positive"),
    ("0123", "row 1, column id: '0123' has a leading zero"),
    ("+5", "row 1, column id: '+5': write the id without a sign"),
    ("٣", "row 1, column id: '٣' is not an ASCII digit"),
    ("12٣", "row 1, column id: '12٣': '٣' is not an ASCII digit"),
    ("12 34", "row 1, column id: '12 34' has spaces inside"),
    ("12/../13", "row 1, column id: '12/../13' is not a user id"),
    ("abc", "row 1, column id: 'abc' is not a user id"),
    ("9223372036854775808", "row 1, column id: too large (max 9223372036854775807)"),
    ("1" * 400, "row 1, column id: too large (max 9223372036854775807)"),
    ("", "row 1, column id: the id is empty"),
    (
        "1.23457E+11",
        "row 1, column id: '1.23457E+11' is not a whole number "
        "(scientific notation: format the column as text in the spreadsheet)",
    ),
]


@pytest.mark.parametrize(("cell", "message"), BAD_IDS)
def test_bad_ids_are_invalid_rows_with_a_reason(tmp_path: Path, cell: str, message: str) -> None:
    """Near-miss ids are refused with the specific reason; the id is kept as written."""
    item = one(tmp_path, "id,email", f"{cell},a@x.io")
    assert item == InvalidRow(row=1, raw_id=cell, column="id", message=message)


BAD_CELLS: list[tuple[str, str, str]] = [
    # column, cell, message
    ("maxChats", "abc", "row 1, column maxChats: 'abc' is not a whole number"),
    ("maxChats", "1.5", "row 1, column maxChats: '1.5' is not a whole number"),
    ("maxChats", "٣", "row 1, column maxChats: '٣' is not an ASCII digit"),
    ("maxChats", "1 000", "row 1, column maxChats: '1 000' is not a whole number"),
    (
        "maxChats",
        "9223372036854775808",
        "row 1, column maxChats: '9223372036854775808' is out of range "
        "(a whole number from -2^63 to 2^63-1)",
    ),
    (
        "maxChats",
        "#n/a",
        "row 1, column maxChats: '#n/a' is not a whole number (write #N/A exactly to clear)",
    ),
    (
        "isEnabled",
        "maybe",
        "row 1, column isEnabled: 'maybe' is not a boolean (use true/false, yes/no or 1/0)",
    ),
    (
        "isEnabled",
        "2",
        "row 1, column isEnabled: '2' is not a boolean (use true/false, yes/no or 1/0)",
    ),
    (
        "skillIds",
        "1||2",
        "row 1, column skillIds: '1||2' has an empty member (separate ids with a single '|')",
    ),
    (
        "skillIds:add",
        "1|2|",
        "row 1, column skillIds:add: '1|2|' has an empty member (separate ids with a single '|')",
    ),
    ("skillIds", "1|x", "row 1, column skillIds: 'x' is not a whole number"),
    (
        "skillIds",
        '"1,2"',
        "row 1, column skillIds: '1,2' is not a whole number; separate list members with '|'",
    ),
    ("managerOf", "1|1.5", "row 1, column managerOf: '1.5' is not a whole number"),
    (
        "memberOf",
        "1|2",
        "row 1, column memberOf: '1|2': a user is a member of one agent group only",
    ),
    ("memberOf", "sales", "row 1, column memberOf: 'sales' is not a whole number"),
    (
        "skillIds:add",
        "#N/A",
        "row 1, column skillIds:add: #N/A (clear) cannot be used in an :add column; "
        "put it in a 'skillIds' column to empty the list",
    ),
    (
        "managerOf:remove",
        "#N/A",
        "row 1, column managerOf:remove: #N/A (clear) cannot be used in an :remove column; "
        "put it in a 'managerOf' column to empty the list",
    ),
    (
        "passwordSh",
        "#N/A",
        "row 1, column passwordSh: #N/A cannot clear a password; leave the cell empty to keep it",
    ),
]


@pytest.mark.parametrize(("column", "cell", "message"), BAD_CELLS)
def test_bad_values_are_invalid_rows_naming_row_and_column(
    tmp_path: Path, column: str, cell: str, message: str
) -> None:
    """A value that does not read as its attribute's kind makes the row invalid, saying why."""
    item = one(tmp_path, f"id,{column}", f"42,{cell}")
    assert item == InvalidRow(row=1, raw_id="42", column=column, message=message)


def test_a_member_both_added_and_removed_is_invalid(tmp_path: Path) -> None:
    """One row cannot add and remove the same member: its intent is unclear."""
    item = one(tmp_path, "id,skillIds:add,skillIds:remove", "42,1|2,3|2")
    assert item == InvalidRow(
        row=1,
        raw_id="42",
        column="skillIds:remove",
        message="row 1, column skillIds:remove: 2 is both added and removed",
    )


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    """A message quotes at most 40 characters of a value, so it stays one short line."""
    message = message_of(one(tmp_path, "id,maxChats", "42," + "x" * 500))
    assert message == f"row 1, column maxChats: '{'x' * 40}…' is not a whole number"


def test_row_numbers_count_data_rows_and_skip_blank_lines(tmp_path: Path) -> None:
    """Row N is the N-th non-blank data row; blank and all-empty lines are not rows."""
    path = write(tmp_path, "id,maxChats\n\n1,1\n   \n,\n2,x\n\n3,3\n")
    assert [(item.row, type(item).__name__) for item in rows(path)] == [
        (1, "Change"),
        (2, "InvalidRow"),
        (3, "Change"),
    ]
    assert message_of(rows(path)[1]).startswith("row 2, column maxChats:")


def test_rows_naming_the_same_user_keep_file_order(tmp_path: Path) -> None:
    """Several rows for one id come out in file order with their own row numbers."""
    path = write(tmp_path, "id,maxChats\n7,1\n8,1\n7,2\n")
    changes = [c for c in rows(path) if isinstance(c, Change)]
    assert [(c.row, c.user_id, edits_of(c)[0].value) for c in changes] == [
        (1, 7, 1),
        (2, 8, 1),
        (3, 7, 2),
    ]


# -- encodings, delimiters, line endings ---------------------------------------------------

EXPECTED_PAIR = [
    Change(1, 42, (Edit("nickname", Op.SET, "Zoë, the 1st"), Edit("maxChats", Op.SET, 3))),
    Change(2, 43, (Edit("skillIds", Op.ADD, (1, 2)),)),
]

SPELLINGS: list[tuple[str, bytes]] = [
    (
        "comma, LF",
        b'id,nickname,maxChats,skillIds:add\n42,"Zo\xc3\xab, the 1st",3,\n43,,,1|2\n',
    ),
    (
        "BOM, CRLF",
        b'\xef\xbb\xbfid,nickname,maxChats,skillIds:add\r\n42,"Zo\xc3\xab, the 1st",3,\r\n'
        b"43,,,1|2\r\n",
    ),
    (
        "semicolon, BOM, CRLF",
        b"\xef\xbb\xbfid;nickname;maxChats;skillIds:add\r\n42;Zo\xc3\xab, the 1st;3;\r\n"
        b"43;;;1|2\r\n",
    ),
    ("tab", b"id\tnickname\tmaxChats\tskillIds:add\n42\tZo\xc3\xab, the 1st\t3\t\n43\t\t\t1|2\n"),
    (
        "no final newline",
        b'id,nickname,maxChats,skillIds:add\n42,"Zo\xc3\xab, the 1st",3,\n43,,,1|2',
    ),
    (
        "padded header names",
        b' id , nickname ,maxChats , skillIds:add\n42,"Zo\xc3\xab, the 1st",3,\n43,,,1|2\n',
    ),
]


@pytest.mark.parametrize(("spelling", "content"), SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_encodings_delimiters_and_line_endings(
    tmp_path: Path, spelling: str, content: bytes
) -> None:
    """UTF-8 with or without BOM, CRLF or LF, `,` `;` or tab all read the same."""
    assert rows(write(tmp_path, content)) == EXPECTED_PAIR


def test_the_delimiter_is_the_one_that_finds_the_id_column(tmp_path: Path) -> None:
    """A `;` header whose names hold commas is still split on `;` (the id column decides)."""
    path = write(tmp_path, "id;description\n42;a, b, c, d\n")
    with open_changes(path) as reader:
        assert reader.delimiter == ";"
        assert reader.columns == (Column("description", "description", Op.SET, Kind.STRING),)
        assert list(reader) == [Change(1, 42, (Edit("description", Op.SET, "a, b, c, d"),))]


def test_quoted_newlines_stay_inside_the_cell(tmp_path: Path) -> None:
    """A quoted cell may span lines; it is one cell and the next record is the next row."""
    path = write(tmp_path, 'id,description,maxChats\r\n42,"line one\r\nline two",3\r\n43,,4\r\n')
    assert rows(path) == [
        Change(
            1,
            42,
            (Edit("description", Op.SET, "line one\r\nline two"), Edit("maxChats", Op.SET, 3)),
        ),
        Change(2, 43, (Edit("maxChats", Op.SET, 4),)),
    ]


def test_a_header_only_file_yields_nothing(tmp_path: Path) -> None:
    """A file with just a valid header is valid and empty."""
    path = write(tmp_path, "id,email\r\n")
    assert rows(path) == []
    assert count_rows(path) == 0


# -- rows that cannot be used -----------------------------------------------------------------


def test_bytes_that_are_not_utf8_in_a_row_make_that_row_invalid(tmp_path: Path) -> None:
    """A Latin-1 byte names row, column and byte; the rows around it still parse."""
    path = write(tmp_path, b"id,nickname\n1,Ann\n2,Ren\xe9e\n3,Bo\n")
    assert rows(path) == [
        Change(1, 1, (Edit("nickname", Op.SET, "Ann"),)),
        InvalidRow(
            2,
            "2",
            "nickname",
            "row 2, column nickname: byte 0xE9 is not UTF-8; save the file as CSV UTF-8",
        ),
        Change(3, 3, (Edit("nickname", Op.SET, "Bo"),)),
    ]


def test_bytes_that_are_not_utf8_in_the_id_are_not_kept_as_raw_id(tmp_path: Path) -> None:
    """The raw id goes to the results file, so an undecodable one is dropped."""
    path = write(tmp_path, b"id,nickname\n1\xff,Ann\n")
    assert rows(path) == [
        InvalidRow(
            1, "", "id", "row 1, column id: byte 0xFF is not UTF-8; save the file as CSV UTF-8"
        )
    ]


def test_a_password_is_never_quoted_in_a_message(tmp_path: Path) -> None:
    """A bad byte in passwordSh is reported without showing any of the value."""
    path = write(tmp_path, b"id,passwordSh\n1,hunter\xe92\n")
    [item] = rows(path)
    assert item == InvalidRow(
        1,
        "1",
        "passwordSh",
        "row 1, column passwordSh: the value is not UTF-8; save the file as CSV UTF-8",
    )
    assert "hunter" not in item.message
    assert "E9" not in item.message


def test_nul_bytes_make_the_row_invalid(tmp_path: Path) -> None:
    """A NUL byte (a UTF-16 or binary file) invalidates its row only."""
    path = write(tmp_path, b"id,nickname\n1,A\x00n\n2,Bo\n")
    assert rows(path) == [
        InvalidRow(
            1,
            "1",
            "nickname",
            "row 1, column nickname: contains a NUL byte (is the file UTF-16 or binary? "
            "save it as CSV UTF-8)",
        ),
        Change(2, 2, (Edit("nickname", Op.SET, "Bo"),)),
    ]


def test_a_10_mb_cell_makes_its_row_invalid_and_the_next_row_still_parses(tmp_path: Path) -> None:
    """A cell over 1 MiB is refused by name; parsing goes on with the next row."""
    path = write(tmp_path, b"id,description,maxChats\n1," + b"x" * (10 * MB) + b",3\n2,ok,4\n")
    assert rows(path) == [
        InvalidRow(1, "1", "description", "row 1, column description: cell too large (over 1 MiB)"),
        Change(2, 2, (Edit("description", Op.SET, "ok"), Edit("maxChats", Op.SET, 4))),
    ]


def test_a_cell_of_exactly_1_mib_is_fine(tmp_path: Path) -> None:
    """The limit is on bytes, inclusive: 1 MiB of text is a cell like any other."""
    path = write(tmp_path, b"id,description\n1," + b"x" * MB + b"\n")
    [item] = rows(path)
    assert isinstance(item, Change)
    assert edits_of(item)[0].value == "x" * MB


def test_a_multibyte_cell_over_1_mib_of_bytes_is_too_large(tmp_path: Path) -> None:
    """The limit counts UTF-8 bytes, not characters."""
    path = write(tmp_path, "id,description\n1," + "é" * (MB // 2 + 1) + "\n")
    assert message_of(rows(path)[0]) == "row 1, column description: cell too large (over 1 MiB)"


def test_a_quoted_10_mb_cell_spanning_lines_does_not_spill_into_rows(tmp_path: Path) -> None:
    """A huge quoted cell with newlines in it is one invalid row, not thousands of bogus ones."""
    body = b"\n".join([b"y" * 1000] * 10_000)
    path = write(tmp_path, b'id,description\n1,"' + body + b'"\n2,ok\n')
    assert rows(path) == [
        InvalidRow(1, "1", "description", "row 1, column description: cell too large (over 1 MiB)"),
        Change(2, 2, (Edit("description", Op.SET, "ok"),)),
    ]
    assert count_rows(path) == 2


def test_a_line_over_16_mib_is_skipped_without_being_held(tmp_path: Path) -> None:
    """A giant line is read in bounded pieces and skipped; the next row still parses."""
    path = write(tmp_path, b"id,description\n1," + b"z" * (17 * MB) + b"\n2,ok\n")
    assert rows(path) == [
        InvalidRow(1, "", None, "row 1: cell too large (a line over 16 MiB)"),
        Change(2, 2, (Edit("description", Op.SET, "ok"),)),
    ]


def test_ragged_rows_are_invalid(tmp_path: Path) -> None:
    """A row with too few or too many cells is invalid; it is not guessed at."""
    header = "id,email,nickname,maxChats,isEnabled,lobIds"
    path = write(tmp_path, f"{header}\n5,x,y,1\n6,x,y,1,1,1,extra\n")
    assert rows(path) == [
        InvalidRow(1, "5", None, "row 1 has 4 cells; the header has 6"),
        InvalidRow(2, "6", None, "row 2 has 7 cells; the header has 6"),
    ]


def test_an_unclosed_quote_is_reported_not_swallowed_silently(tmp_path: Path) -> None:
    """A quote never closed eats the rest of the file as CSV says; the row says so."""
    path = write(tmp_path, 'id,nickname\n1,ok\n2,"oops\n3,x\n4,y\n')
    items = rows(path)
    assert items[0] == Change(1, 1, (Edit("nickname", Op.SET, "ok"),))
    assert items[1] == InvalidRow(
        2,
        "",
        None,
        'row 2: a quote (") opened in this row is never closed, so the rest of the file was '
        "read as one cell",
    )
    assert len(items) == 2


def test_a_stray_carriage_return_makes_its_row_invalid(tmp_path: Path) -> None:
    """A lone CR outside quotes breaks only its row; the rows after it still parse."""
    path = write(tmp_path, b"id,nickname\n1,A\rnn\n2,Bo\n")
    assert rows(path) == [
        InvalidRow(
            1, "", None, "row 1: a line break (carriage return) inside a cell that is not quoted"
        ),
        Change(2, 2, (Edit("nickname", Op.SET, "Bo"),)),
    ]


def test_a_value_under_an_unnamed_column_is_invalid(tmp_path: Path) -> None:
    """A trailing delimiter in the header is tolerated; a value under it is not ignored."""
    path = write(tmp_path, "id,nickname,\n1,Ann,\n2,Bo,surprise\n")
    assert rows(path) == [
        Change(1, 1, (Edit("nickname", Op.SET, "Ann"),)),
        InvalidRow(
            2,
            "2",
            "3 (no name)",
            "row 2, column 3 (no name): 'surprise' is in a column with no name in the header",
        ),
    ]


# -- files that cannot be used at all ---------------------------------------------------------

FILE_ERRORS: list[tuple[bytes, str, str | None]] = [
    # content, message after "<path>: ", column
    (b"", "the file is empty (no header line)", None),
    (b"\n\r\n  \n", "the file is empty (no header line)", None),
    (b"email,nickname\n1,x\n", "no 'id' column (the user id)", "id"),
    (
        b"ID,email\n1,x\n",
        "no 'id' column (the user id); did you mean 'ID'? (names are case-sensitive)",
        "id",
    ),
    (b"id,email,email\n1,x,y\n", "column 'email' appears twice (columns 2 and 3)", "email"),
    (b"id,id\n1,1\n", "column 'id' appears twice (columns 1 and 2)", "id"),
    (b"id,emial\n1,x\n", "unknown column 'emial'; did you mean 'email'?", "emial"),
    (b"id,Email\n1,x\n", "unknown column 'Email'; did you mean 'email'?", "Email"),
    (b"id,skillids\n1,x\n", "unknown column 'skillids'; did you mean 'skillIds'?", "skillids"),
    (
        b"id,skilIds:add\n1,x\n",
        "unknown column 'skilIds:add'; did you mean 'skillIds:add'?",
        "skilIds:add",
    ),
    (
        b"id,favouriteColour\n1,x\n",
        "unknown column 'favouriteColour' (not a user attribute that a changes file can set)",
        "favouriteColour",
    ),
    (
        b"id,dateUpdated\n1,x\n",
        "column 'dateUpdated' is read-only (the server sets it)",
        "dateUpdated",
    ),
    (b"id,deleted\n1,x\n", "column 'deleted' is read-only (the server sets it)", "deleted"),
    (
        b"id,lastPwdChangeDate\n1,x\n",
        "column 'lastPwdChangeDate' is read-only (the server sets it)",
        "lastPwdChangeDate",
    ),
    (
        b"id,email:add\n1,x\n",
        "column 'email:add': ':add' works only on list attributes (lobIds, managerOf, "
        "permissionGroups, profileIds, skillIds); use 'email' to set the value",
        "email:add",
    ),
    (
        b"id,memberOf:remove\n1,x\n",
        "column 'memberOf:remove': ':remove' works only on list attributes (lobIds, managerOf, "
        "permissionGroups, profileIds, skillIds); use 'memberOf' to set the value",
        "memberOf:remove",
    ),
    (
        b"id,skillIds:replace\n1,x\n",
        "column 'skillIds:replace': unknown suffix ':replace' (use 'skillIds:add' or "
        "'skillIds:remove', or 'skillIds' to replace)",
        "skillIds:replace",
    ),
    (
        b"id,skillIds:Add\n1,x\n",
        "column 'skillIds:Add': unknown suffix ':Add' (use 'skillIds:add' or "
        "'skillIds:remove', or 'skillIds' to replace); did you mean 'skillIds:add'? "
        "(names are case-sensitive)",
        "skillIds:Add",
    ),
    (
        b"id,skillIds,skillIds:add\n1,,\n",
        "columns 'skillIds' and 'skillIds:add' cannot be combined: 'skillIds' replaces the "
        "whole list",
        "skillIds:add",
    ),
    (
        b"id,skillIds:remove,email,skillIds\n1,,,\n",
        "columns 'skillIds' and 'skillIds:remove' cannot be combined: 'skillIds' replaces the "
        "whole list",
        "skillIds:remove",
    ),
    (b"id,id:add\n1,x\n", "the key column 'id' takes no suffix: 'id:add'", "id:add"),
    (
        b"id,caf\xe9\n1,x\n",
        "the header is not UTF-8 (byte 0xE9 at position 7); save the file as CSV UTF-8",
        None,
    ),
    (b"\xff\xfei\x00d\x00\n\x00", "the file is UTF-16; save it as CSV UTF-8", None),
    (b"id,nick\x00name\n", "the header contains NUL bytes; save the file as CSV UTF-8", None),
    (
        b"id,nickname\r1,Ann\r2,Bo\r",
        "lines end with a carriage return only; save the file as CSV UTF-8",
        None,
    ),
]


@pytest.mark.parametrize(("content", "message", "column"), FILE_ERRORS)
def test_file_level_errors_raise_before_any_row(
    tmp_path: Path, content: bytes, message: str, column: str | None
) -> None:
    """A structurally unusable file raises ChangesFileError naming the problem (and the
    closest valid name), and not a single row comes out first."""
    path = write(tmp_path, content)
    got: list[Change | InvalidRow] = []
    with pytest.raises(ChangesFileError) as caught:
        got.extend(read_changes(path))
    assert got == []
    assert str(caught.value) == f"{path}: {message}"
    assert caught.value.column == column
    assert caught.value.path == str(path)
    assert caught.value.exit_code == 2


def test_the_header_is_checked_on_the_call_not_on_first_iteration(tmp_path: Path) -> None:
    """read_changes and open_changes raise at once, so a caller can check before starting."""
    path = write(tmp_path, "id,emial\n1,x\n")
    with pytest.raises(ChangesFileError):
        read_changes(path)
    with pytest.raises(ChangesFileError):
        open_changes(path)
    with pytest.raises(ChangesFileError):
        count_rows(path)


@pytest.mark.parametrize(
    ("name", "message"), [("missing.csv", "no such file"), ("", "is a directory, not a CSV file")]
)
def test_unreadable_paths_are_file_errors(tmp_path: Path, name: str, message: str) -> None:
    """A missing file or a directory is a ChangesFileError, not a traceback."""
    path = tmp_path / name
    for call in (read_changes, count_rows, fingerprint):
        with pytest.raises(ChangesFileError) as caught:
            call(path)
        assert str(caught.value) == f"{path}: {message}"


# -- the reader as a resource -----------------------------------------------------------------


def test_the_reader_closes_its_file(tmp_path: Path) -> None:
    """The context manager releases the file, also when rows are left unread."""
    path = write(tmp_path, "id,maxChats\n1,1\n2,2\n")
    with open_changes(path) as reader:
        assert next(iter(reader)) == Change(1, 1, (Edit("maxChats", Op.SET, 1),))
        assert not reader.closed
    assert reader.closed


def test_a_fully_read_reader_closes_its_file(tmp_path: Path) -> None:
    """Reading every row releases the file even without a with block."""
    reader = open_changes(write(tmp_path, "id,maxChats\n1,1\n"))
    assert len(list(reader)) == 1
    assert reader.closed


# -- size: streaming, counting, fingerprint ---------------------------------------------------


def test_a_200000_row_file_streams_in_constant_memory(tmp_path: Path) -> None:
    """read_changes never holds the file: its peak allocation stays far below the file size."""
    path = tmp_path / "big.csv"
    # One short column keeps tracemalloc's per-allocation cost (and the test) fast; the
    # lines are long so that holding the file would show.
    padding = "x" * 40
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,nickname\r\n")
        for i in range(200_000):
            out.write(f"{10_000_001 + i},agent-{i:06d}-{padding}\r\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        valid = 0
        last = 0
        for item in read_changes(path):
            valid += isinstance(item, Change)
            last = item.row
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (valid, last) == (200_000, 200_000)
    assert size > 10 * MB
    assert peak < 2 * MB


def test_count_rows_counts_what_read_changes_yields(tmp_path: Path) -> None:
    """The progress total matches the rows: quoted newlines are not rows, blank lines either."""
    path = write(
        tmp_path,
        'id,description\n1,"a\nb\nc"\n\n2,x\n,\n3,\xe9\n4\n5,"q ""x"" q"\n'.encode("latin-1"),
    )
    assert count_rows(path) == len(rows(path)) == 5


def test_fingerprint_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    """The fingerprint ties a results file to these exact bytes."""
    content = b"id,email\n" + b"1,a@x.io\n" * 300_000
    path = write(tmp_path, content)
    assert fingerprint(path) == hashlib.sha256(content).hexdigest()
    write(tmp_path, content + b"2,b@x.io\n")
    assert fingerprint(path) != hashlib.sha256(content).hexdigest()
