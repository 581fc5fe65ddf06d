"""Logging set-up, done once by the CLI: human lines on a terminal, JSON lines in --log-file
and on pipes, secrets masked wherever they hide."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from bulkusers.errors import UsageError

_SECRET_KEY = re.compile(r"authori[sz]ation|token|secret|password|passwd|passwordsh|cookie", re.I)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """Mask every value stored under a secret-looking key, nested ones included."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_processor(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor form of `redact`."""
    for key in list(event_dict):
        if key == "event":
            continue
        event_dict[key] = REDACTED if _SECRET_KEY.search(key) else redact(event_dict[key])
    return event_dict


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is now, so a live progress bar can take the lines."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(
    *, log_file: Path | None, verbose: bool = False, console_json: bool | None = None
) -> None:
    """Route structlog through stdlib logging to the console and, if asked, a JSON file."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    console_level = logging.INFO if verbose else logging.WARNING
    if console_json is None:
        console_json = not sys.stderr.isatty()
    console_renderer: Any = (
        structlog.processors.JSONRenderer()
        if console_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    root = logging.getLogger("bulkusers")
    root.handlers.clear()
    root.propagate = False
    console = _CurrentStderr()
    console.setLevel(console_level)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                console_renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root.addHandler(console)
    level = console_level
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--log-file {log_file}: {exc.strerror or exc}") from exc
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    # Locals of a traceback could hold a token or an entity: never render them.
                    structlog.processors.ExceptionRenderer(
                        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
                    ),
                    structlog.processors.JSONRenderer(),
                ],
                foreign_pre_chain=shared,
            )
        )
        root.addHandler(file_handler)
        level = logging.DEBUG
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Events below the level cost almost nothing: the hot path logs one line per row.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )


def close() -> None:
    """Flush and close the handlers (the log file especially)."""
    root = logging.getLogger("bulkusers")
    for handler in list(root.handlers):
        handler.flush()
        handler.close()
        root.removeHandler(handler)
