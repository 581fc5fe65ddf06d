"""The results journal: format, formula neutralising, crash-cut lines, resume reading."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bulkusers.clock import FakeClock
from bulkusers.errors import ResultsFileError
from bulkusers.results import (
    COLUMNS,
    Outcome,
    ResultsJournal,
    RowResult,
    format_line,
    iter_results,
    read_journal,
)


def journal(path: Path, *results: RowResult) -> None:
    sink = ResultsJournal(path, clock=FakeClock())
    sink.start(fingerprint="abc", changes=Path("c.csv"))
    for result in results:
        sink.write(result)
    sink.close()


def test_header_and_one_line_per_result(tmp_path: Path) -> None:
    """The header is the SPEC's; each result is one CSV line."""
    path = tmp_path / "r.csv"
    journal(
        path,
        RowResult(
            row=2,
            id="7",
            outcome=Outcome.UPDATED,
            http_status=200,
            attempts=1,
            revision_before="5",
            revision_after="6",
            changed=("email", "skillIds"),
        ),
        RowResult(row=1, id="x", outcome=Outcome.INVALID, error="row 1, column id: bad"),
    )
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert rows[1] == ["2", "7", "updated", "200", "1", "5", "6", "email|skillIds", ""]
    assert rows[2] == ["1", "x", "invalid", "", "0", "", "", "", "row 1, column id: bad"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
def test_formula_cells_are_neutralised(start: str) -> None:
    """A cell starting with = + - @ is written so a spreadsheet shows text."""
    line = format_line(
        RowResult(row=1, id=f"{start}1", outcome=Outcome.INVALID, error=f"{start}SUM(A1)")
    )
    cells = next(csv.reader([line]))
    assert cells[1] == f"'{start}1"
    assert cells[8] == f"'{start}SUM(A1)"


def test_newlines_never_split_a_line() -> None:
    """Multi-line text is folded so each result stays one line."""
    line = format_line(RowResult(row=1, id="a\nb", outcome=Outcome.INVALID, error="x\r\ny"))
    assert line.count("\n") == 1
    assert next(csv.reader([line]))[1:9:7] == ["a b", "x y"]


def test_resume_reads_settled_rows_and_ignores_a_cut_line(tmp_path: Path) -> None:
    """Skipped rows and a last line cut short by a crash are not settled."""
    path = tmp_path / "r.csv"
    journal(
        path,
        RowResult(row=1, id="1", outcome=Outcome.UPDATED, attempts=1),
        RowResult(row=2, id="2", outcome=Outcome.SKIPPED),
        RowResult(row=3, id="3", outcome=Outcome.FAILED, attempts=4, error="HTTP 503"),
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write("4,4,upda")  # kill -9 mid-write
    state = read_journal(path)
    assert sorted(state.settled) == [1, 3]
    assert state.settled[3].error == "HTTP 503"
    assert state.fingerprint == "abc"
    assert [r.row for r in iter_results(path)] == [1, 2, 3]


def test_restart_keeps_settled_rows_and_drops_the_rest(tmp_path: Path) -> None:
    """Starting a resumed journal rewrites it with only the kept rows."""
    path = tmp_path / "r.csv"
    journal(path, RowResult(row=1, id="1", outcome=Outcome.SKIPPED))
    kept = [RowResult(row=5, id="5", outcome=Outcome.UNCHANGED, attempts=1)]
    sink = ResultsJournal(path, clock=FakeClock())
    sink.start(keep=kept, fingerprint="abc", changes=Path("c.csv"))
    sink.close()
    assert [r.row for r in iter_results(path)] == [5]


def test_not_a_results_file_is_refused(tmp_path: Path) -> None:
    """--resume against some other CSV says so instead of guessing."""
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ResultsFileError, match="not a bulkusers results file"):
        read_journal(path)


def test_unwritable_results_path(tmp_path: Path) -> None:
    """A results path in a missing folder fails before anything is sent."""
    sink = ResultsJournal(tmp_path / "missing" / "r.csv", clock=FakeClock())
    with pytest.raises(ResultsFileError, match="cannot write the results file"):
        sink.start(fingerprint="abc", changes=Path("c.csv"))
