"""What an HTTP answer (or its absence) means for a row: a pure table, no I/O."""

from __future__ import annotations

import email.utils
import enum
import json
import re
from collections.abc import Mapping
from types import MappingProxyType


class Verdict(enum.Enum):
    """The engine's reading of one answer."""

    OK = "ok"
    CONFLICT = "conflict"  # stale revision: GET again, re-apply, PUT again
    THROTTLED = "throttled"  # 429: wait Retry-After, slow every worker
    TRANSIENT = "transient"  # 5xx, timeout, dropped connection: retry with the policy's delays
    NOT_FOUND = "not_found"
    REJECTED = "rejected"  # other 4xx: the server refuses this row; retrying will not help
    UNAUTHORIZED = "unauthorized"  # 401 after renewal: the whole run stops


#: Statuses with a meaning of their own; the rest go by their class (2xx, 4xx, 5xx).
STATUS_VERDICTS: Mapping[int, Verdict] = MappingProxyType(
    {
        401: Verdict.UNAUTHORIZED,
        404: Verdict.NOT_FOUND,
        408: Verdict.TRANSIENT,
        409: Verdict.CONFLICT,
        412: Verdict.CONFLICT,
        425: Verdict.TRANSIENT,
        429: Verdict.THROTTLED,
    }
)

#: Verdict by status class (status // 100).
CLASS_VERDICTS: Mapping[int, Verdict] = MappingProxyType(
    # 3xx: redirects are not followed (a PUT must not go elsewhere); the URL is wrong.
    {2: Verdict.OK, 3: Verdict.REJECTED, 4: Verdict.REJECTED, 5: Verdict.TRANSIENT}
)


def classify(status: int) -> Verdict:
    """Map an HTTP status to what the engine does next."""
    verdict = STATUS_VERDICTS.get(status)
    if verdict is not None:
        return verdict
    # 1xx never reaches us; anything stranger is treated as a passing fault.
    return CLASS_VERDICTS.get(status // 100, Verdict.TRANSIENT)


def retry_after_seconds(value: str | None, *, now_epoch: float) -> float | None:
    """Read a Retry-After header: seconds (integer or decimal) or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = parsed.timestamp() - now_epoch
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return min(seconds, 3600.0)


_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
#: Longest server message kept for the results file.
MAX_MESSAGE = 300


def server_message(status: int, body: bytes) -> str:
    """A one-line human message from an error answer: its JSON message, else its text."""
    text = body[:65536].decode("utf-8", "replace")
    message = ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("message", "error_description", "error", "errorMessage", "description"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                message = value
                break
    if not message and data is None:
        # An HTML error page or plain text: keep the words, drop the markup.
        message = _TAGS.sub(" ", text)
    message = _SPACE.sub(" ", message).strip()
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"
