"""HTTP answer classification and message extraction (pure)."""

from __future__ import annotations

import pytest

from bulkusers.classify import Verdict, classify, retry_after_seconds, server_message


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.OK),
        (201, Verdict.OK),
        (204, Verdict.OK),
        (400, Verdict.REJECTED),
        (401, Verdict.UNAUTHORIZED),
        (403, Verdict.REJECTED),
        (404, Verdict.NOT_FOUND),
        (408, Verdict.TRANSIENT),
        (409, Verdict.CONFLICT),
        (412, Verdict.CONFLICT),
        (428, Verdict.REJECTED),
        (429, Verdict.THROTTLED),
        (500, Verdict.TRANSIENT),
        (502, Verdict.TRANSIENT),
        (503, Verdict.TRANSIENT),
        (504, Verdict.TRANSIENT),
        (302, Verdict.REJECTED),
        (307, Verdict.REJECTED),
        (600, Verdict.TRANSIENT),
    ],
)
def test_status_table(status: int, verdict: Verdict) -> None:
    """Each status maps to the engine's next step."""
    assert classify(status) is verdict


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        ("0.25", 0.25),
        (" 7 ", 7.0),
        ("-4", 0.0),
        ("nonsense", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("999999", 3600.0),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After in seconds or as an HTTP date, clamped to [0, 1 h]."""
    now = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert retry_after_seconds(header, now_epoch=now) == seconds


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, b'{"message": "maxChats must be >= 0"}', "HTTP 400: maxChats must be >= 0"),
        (401, b'{"error": "invalid_token"}', "HTTP 401: invalid_token"),
        (503, b"<html><h1>Service\n Unavailable</h1></html>", "HTTP 503: Service Unavailable"),
        (500, b"", "HTTP 500"),
        (502, b"\xff\xfe bad bytes", "HTTP 502: \ufffd\ufffd bad bytes"),
        (400, b"[1, 2]", "HTTP 400"),
    ],
)
def test_server_message(status: int, body: bytes, message: str) -> None:
    """Error answers become one readable line."""
    assert server_message(status, body) == message


def test_server_message_is_bounded() -> None:
    """A huge error page is cut to a short line."""
    text = server_message(500, b"x" * 1_000_000)
    assert len(text) <= 320
    assert text.endswith("…")
