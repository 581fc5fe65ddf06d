"""Command-line pieces that `apply` and `check` share: where the account lives, how to reach
it, and how a bad option value is told to the user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import pydantic

from bulkusers.client import DEFAULT_API_VERSION, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
from bulkusers.settings import DEFAULT_CSDS_URL

F = TypeVar("F", bound=Callable[..., Any])

#: The connection options, in the order --help shows them.
_CONNECTION_OPTIONS = (
    click.option(
        "--account", envvar="LP_ACCOUNT", help="LivePerson account (site) id [env LP_ACCOUNT]."
    ),
    click.option(
        "--base-url",
        metavar="URL",
        help="Account-config host, e.g. http://127.0.0.1:8765; skips the Domain API lookup.",
    ),
    click.option(
        "--csds-url",
        default=DEFAULT_CSDS_URL,
        show_default=True,
        metavar="URL",
        help="Where the Domain API is.",
    ),
    click.option(
        "--sentinel-url",
        metavar="URL",
        help="Where the OAuth token endpoint is [default: from the Domain API].",
    ),
    click.option(
        "--api-version",
        default=DEFAULT_API_VERSION,
        show_default=True,
        help="Users API version (v=).",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="CA certificates to trust (e.g. a corporate proxy's), PEM.",
    ),
    click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0.001),
        default=DEFAULT_CONNECT_TIMEOUT,
        show_default=True,
        help="Seconds to wait for a connection.",
    ),
    click.option(
        "--read-timeout",
        type=click.FloatRange(min=0.001),
        default=DEFAULT_READ_TIMEOUT,
        show_default=True,
        help="Seconds to wait for an answer.",
    ),
)


def connection_options(command: F) -> F:
    """Add the account and connection options to a command."""
    for option in reversed(_CONNECTION_OPTIONS):
        command = option(command)
    return command


def validation_message(exc: pydantic.ValidationError) -> str:
    """The first problem of a settings object, phrased as the option that caused it."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    shown = f" ({value!r})" if isinstance(value, str | int | float) else ""
    return f"--{where.replace('_', '-')}{shown}: {first['msg']}"
