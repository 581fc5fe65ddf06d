"""Logging: one canonical event per row, secrets redacted wherever they hide, JSON lines in
--log-file, and log lines that do not tear the progress bar."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from rich.console import Console
from structlog.testing import capture_logs

from bulkusers import logs
from bulkusers.apply import _log_row
from bulkusers.progress import ProgressDisplay
from bulkusers.results import Outcome, RowResult


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Path]:
    log_file = tmp_path / "run.log"
    logs.configure(log_file=log_file, console_json=True)
    yield log_file
    logs.close()
    structlog.reset_defaults()


def test_redaction_masks_nested_secret_keys() -> None:
    """authorization/token/secret/password keys are masked at any depth; the rest stays."""
    event = {
        "event": "x",
        "headers": {"Authorization": "Bearer abc", "Accept": "application/json"},
        "body": [{"passwordSh": "hunter2", "email": "a@b.c"}],
        "client_secret": "s3cr3t",
        "access_token": "eyJ...",
        "user_id": 7,
    }
    out = logs.redact_processor(None, "info", dict(event))
    assert out["headers"] == {"Authorization": "[redacted]", "Accept": "application/json"}
    assert out["body"] == [{"passwordSh": "[redacted]", "email": "a@b.c"}]
    assert out["client_secret"] == "[redacted]"
    assert out["access_token"] == "[redacted]"
    assert out["user_id"] == 7


def test_one_canonical_event_per_row() -> None:
    """A settled row logs one event with its row, user, outcome and attempts."""
    result = RowResult(row=3, id="42", outcome=Outcome.CONFLICT, http_status=409, attempts=5,
                       error="gave up")  # fmt: skip
    with capture_logs() as captured:
        _log_row(result)
    assert captured == [
        {
            "event": "row_settled",
            "log_level": "warning",
            "row": 3,
            "user_id": "42",
            "outcome": "conflict",
            "attempts": 5,
            "http_status": 409,
            "changed": [],
            "error": "gave up",
        }
    ]


def test_skipped_rows_stay_off_the_console() -> None:
    """Rows skipped by a stop are info, not a flood of warnings."""
    with capture_logs() as captured:
        _log_row(RowResult(row=1, id="1", outcome=Outcome.SKIPPED, error="not tried"))
    assert captured[0]["log_level"] == "info"


def test_log_file_gets_json_lines_with_secrets_redacted(
    configured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-file holds one JSON object per event, info included; the console only warnings."""
    log = structlog.get_logger("bulkusers.test")
    log.info("token_renewed", access_token="eyJhbGciOi.secret.part", expires_in=3600)
    log.warning("row_settled", row=1, outcome="failed")
    logs.close()
    lines = [json.loads(line) for line in configured.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["token_renewed", "row_settled"]
    assert lines[0]["access_token"] == "[redacted]"
    assert lines[0]["expires_in"] == 3600
    assert "eyJhbGciOi" not in configured.read_text()
    console = capsys.readouterr().err
    assert "row_settled" in console
    assert "token_renewed" not in console


def test_log_lines_do_not_tear_the_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the bar is live, a warning is printed whole on its own line above it."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    logs.configure(log_file=None, console_json=True)
    try:
        display = ProgressDisplay(total=10, console=console)
        with display:
            # rich swaps sys.stderr while live; the log handler writes to whatever it is now.
            assert sys.stderr is not sys.__stderr__
            structlog.get_logger("bulkusers.test").warning("api_outage", failed=8, of=8)
            for row in range(1, 4):
                display.settled(RowResult(row=row, id=str(row), outcome=Outcome.UPDATED))
    finally:
        logs.close()
        structlog.reset_defaults()
    text = buffer.getvalue()
    warning_lines = [line for line in text.splitlines() if "api_outage" in line]
    assert len(warning_lines) == 1
    payload = warning_lines[0][warning_lines[0].index("{") :]
    assert json.loads(payload)["failed"] == 8
    assert logging.getLogger("bulkusers").handlers == []
