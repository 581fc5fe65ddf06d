"""The results file: one CSV line per input row, the run's journal, safe across kill -9."""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bulkusers.clock import Clock
from bulkusers.errors import ResultsFileError

COLUMNS = (
    "row",
    "id",
    "outcome",
    "http_status",
    "attempts",
    "revision_before",
    "revision_after",
    "changed",
    "error",
)
HEADER_LINE = ",".join(COLUMNS) + "\n"
#: fsync the journal at least this often (and at close).
DEFAULT_FSYNC_INTERVAL = 1.0


class Outcome(enum.Enum):
    """How a row ended."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    WOULD_UPDATE = "would_update"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    CONFLICT = "conflict"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def is_success(self) -> bool:
        return self in _SUCCESS


_SUCCESS = frozenset({Outcome.UPDATED, Outcome.UNCHANGED, Outcome.WOULD_UPDATE})
_OUTCOMES = {o.value: o for o in Outcome}


@dataclass(frozen=True, slots=True)
class RowResult:
    """The settled outcome of one input row."""

    row: int
    id: str
    outcome: Outcome
    http_status: int | None = None
    attempts: int = 0
    revision_before: str | None = None
    revision_after: str | None = None
    changed: tuple[str, ...] = ()
    error: str = ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """One results cell: one line, and never read as a formula by a spreadsheet."""
    if value is None:
        return ""
    text = str(value)
    if "\n" in text or "\r" in text:
        text = " ".join(text.splitlines())
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def format_line(result: RowResult) -> str:
    """The CSV line for one result, newline included."""
    cells = (
        str(result.row),
        _cell(result.id),
        result.outcome.value,
        "" if result.http_status is None else str(result.http_status),
        str(result.attempts),
        _cell(result.revision_before),
        _cell(result.revision_after),
        _cell("|".join(result.changed)),
        _cell(result.error),
    )
    line = ",".join(cells)
    # Most lines need no quoting at all: join them, and leave the rest to the csv module
    # (a StringIO and a writer per line cost more than the write itself).
    if line.count(",") == len(COLUMNS) - 1 and '"' not in line and "\r" not in line:
        return line + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _parse_line(line: str) -> RowResult | None:
    """A journal line back to a result; None if it is damaged."""
    try:
        (fields,) = list(csv.reader([line]))
    except (csv.Error, ValueError):
        return None
    if len(fields) != len(COLUMNS) or not fields[0].isdigit():
        return None
    outcome = _OUTCOMES.get(fields[2])
    if outcome is None or not fields[4].isdigit():
        return None
    return RowResult(
        row=int(fields[0]),
        id=fields[1],
        outcome=outcome,
        http_status=int(fields[3]) if fields[3].isdigit() else None,
        attempts=int(fields[4]),
        revision_before=fields[5] or None,
        revision_after=fields[6] or None,
        changed=tuple(fields[7].split("|")) if fields[7] else (),
        error=fields[8],
    )


@dataclass(frozen=True, slots=True)
class Journal:
    """What an earlier run of the same changes file settled."""

    settled: dict[int, RowResult]  # by row number; `skipped` rows are not settled
    fingerprint: str | None


def meta_path(results: Path) -> Path:
    """The sidecar that ties a results file to the changes file it was made from."""
    return results.with_name(results.name + ".meta")


def read_journal(results: Path) -> Journal:
    """Read a results file for --resume, ignoring a line a crash cut short."""
    settled: dict[int, RowResult] = {}
    try:
        with results.open(encoding="utf-8", newline="") as handle:
            header = handle.readline()
            if header and header != HEADER_LINE:
                raise ResultsFileError(
                    f"{results}: not a bulkusers results file (unexpected header)"
                )
            for line in handle:
                if not line.endswith("\n"):
                    break  # cut short by a crash mid-write: the row was not settled
                result = _parse_line(line)
                if result is not None and result.outcome is not Outcome.SKIPPED:
                    settled[result.row] = result
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{results}: cannot read ({exc.__class__.__name__})") from exc
    fingerprint = None
    try:
        fingerprint = json.loads(meta_path(results).read_text("utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        fingerprint = None
    return Journal(settled=settled, fingerprint=fingerprint)


class ResultsJournal:
    """Appends result lines straight to the file (no user-space buffer: a settled row is in
    the OS when `write` returns), fsyncs at least every second, and never leaves half a line
    behind: a failed write is cut back to the last complete line."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        fsync_interval: float = DEFAULT_FSYNC_INTERVAL,
    ) -> None:
        self.path = path
        self._clock = clock
        self._fsync_interval = fsync_interval
        self._fd: int | None = None
        self._size = 0  # bytes of complete lines on disk
        self._last_sync = 0.0

    def start(self, *, keep: Iterable[RowResult] = (), fingerprint: str, changes: Path) -> None:
        """prepare() then commit(): for callers with nothing to do in between."""
        self.prepare(keep=keep)
        self.commit(fingerprint=fingerprint, changes=changes)

    def prepare(self, *, keep: Iterable[RowResult] = ()) -> None:
        """Write the header and the rows kept from an earlier run to a temporary file beside
        the results path. Proves the path writable before any request (ResultsFileError
        otherwise) while leaving an existing results file untouched until commit()."""
        try:
            with self._tmp.open("w", encoding="utf-8", newline="") as out:
                out.write(HEADER_LINE)
                for result in keep:
                    out.write(format_line(result))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            self.abandon()
            raise ResultsFileError(
                f"cannot write the results file {self.path}: {exc.strerror or exc}"
            ) from exc

    def commit(self, *, fingerprint: str, changes: Path, backup: bool = False) -> Path | None:
        """Put the prepared file in place (an earlier results file moves to `.bak` if
        `backup`), record the input's fingerprint, open for appending. Returns the backup."""
        saved: Path | None = None
        try:
            if backup and self.path.exists():
                saved = self.path.with_name(self.path.name + ".bak")
                os.replace(self.path, saved)
            os.replace(self._tmp, self.path)
            # The new results first, then their fingerprint, each replaced atomically: a crash
            # in between pairs new results with the old fingerprint, which --resume refuses
            # unless the input is the same.
            meta = {"changes": str(changes), "sha256": fingerprint}
            meta_tmp = meta_path(self._tmp)
            meta_tmp.write_text(json.dumps(meta) + "\n", "utf-8")
            os.replace(meta_tmp, meta_path(self.path))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            self.abandon()
            raise ResultsFileError(
                f"cannot write the results file {self.path}: {exc.strerror or exc}"
            ) from exc
        self._last_sync = self._clock.now()
        return saved

    def abandon(self) -> None:
        """Drop a prepared file that will not be used."""
        self._tmp.unlink(missing_ok=True)
        meta_path(self._tmp).unlink(missing_ok=True)

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.tmp")

    def write(self, result: RowResult) -> None:
        """Record one settled row; raises OSError (disk full...) with the file left whole."""
        fd = self._fd
        assert fd is not None, "start() first"
        data = format_line(result).encode("utf-8")
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            now = self._clock.now()
            if now - self._last_sync >= self._fsync_interval:
                os.fsync(fd)
                self._last_sync = now
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        """fsync and close; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def iter_results(path: Path) -> Iterator[RowResult]:
    """Every complete line of a results file (for tests and the summary of a resumed run)."""
    with path.open(encoding="utf-8", newline="") as handle:
        handle.readline()
        for line in handle:
            if line.endswith("\n"):
                result = _parse_line(line)
                if result is not None:
                    yield result
