"""The `bulkusers` command: parses options, builds the settings, wires the parts together."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import pydantic

from bulkusers.engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_OUTAGE,
    DEFAULT_RETRY_DELAYS,
)
from bulkusers.errors import BulkUsersError, UsageError
from bulkusers.options import connection_options, validation_message
from bulkusers.ratelimit import DEFAULT_MIN_RATE
from bulkusers.settings import (
    DEFAULT_GRACE,
    DEFAULT_RATE,
    ApplySettings,
    Credentials,
    parse_delays,
)

EXIT_USAGE = 2
EXIT_STOPPED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkusers")
def cli() -> None:
    """Bulk-update LivePerson Conversational Cloud users from a CSV of changes.

    Credentials come from the environment only: LP_CLIENT_ID + LP_CLIENT_SECRET (OAuth 2.0
    client credentials) or LP_BEARER_TOKEN.
    """


def _default_results(changes: Path) -> Path:
    name = changes.name[: -len(".csv")] if changes.name.lower().endswith(".csv") else changes.name
    return changes.with_name(f"{name}.results.csv")


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"bulkusers: error: {message}", err=True)
    sys.exit(code)


@cli.command()
@click.argument("changes", type=click.Path(path_type=Path, dir_okay=False))
@connection_options
@click.option(
    "--results",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Per-row outcome file [default: CHANGES.results.csv next to the input].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=DEFAULT_RATE,
    show_default=True,
    help="Requests per second at most, GETs and PUTs alike (0 = no cap).",
)
@click.option(
    "--min-rate",
    type=click.FloatRange(min=0.01),
    default=DEFAULT_MIN_RATE,
    show_default=True,
    help="Floor of the adaptive rate: each burst of 429s halves the rate, never below this; "
    "it then climbs back to --rate.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="GET-merge-PUT attempts per row before it ends `conflict` or `failed`.",
)
@click.option(
    "--retry-delays",
    default=",".join(f"{d:g}" for d in DEFAULT_RETRY_DELAYS),
    show_default=True,
    metavar="LIST",
    help="Seconds to pause before each retry after a 5xx, a timeout or a dropped "
    "connection (LivePerson's policy); when used up the row ends `failed`.",
)
@click.option("--dry-run", is_flag=True, help="GET and diff only; never PUT.")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the results file, skip rows it already settled, process the rest.",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write structured JSON log lines (one per event) to this file.",
)
@click.option(
    "--quiet/--progress",
    "quiet",
    default=None,
    help="Hide / show the progress display on stderr [default: shown on a terminal].",
)
@click.option(
    "--method-override", is_flag=True, help="Send updates as POST with X-HTTP-Method-Override: PUT."
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE,
    show_default=True,
    help="After Ctrl-C, seconds that rows in flight may take to finish.",
)
@click.option(
    "--max-outage",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_OUTAGE,
    show_default=True,
    help="Stop the run (exit 3, resumable) when the API stays down this long.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show info-level events on the console.")
def apply(changes: Path, **options: Any) -> None:
    """Apply CHANGES.csv to the account's users, one GET-merge-PUT per row.

    Exit status: 0 every row updated/unchanged/would_update; 1 some rows ended otherwise
    (see the results file); 2 nothing was sent (bad usage or input); 3 stopped early
    (credentials refused, interrupted): --resume finishes the rest.
    """
    from bulkusers import logs
    from bulkusers.apply import run_apply

    settings = _apply_settings(changes, options)
    try:
        logs.configure(log_file=settings.log_file, verbose=options["verbose"])
        report = anyio.run(run_apply, settings)
    except BulkUsersError as exc:
        logs.close()
        _fail(str(exc), exc.exit_code)
        return
    except KeyboardInterrupt:  # before the engine (and its signal handling) started
        logs.close()
        _fail("interrupted before the first row was sent; nothing was changed", EXIT_STOPPED)
        return
    logs.close()
    sys.exit(report.exit_code)


def _apply_settings(changes: Path, options: dict[str, Any]) -> ApplySettings:
    """Check the options and build the run's settings; exit 2 with a message if they are bad."""
    if not options.get("account"):
        _fail("--account is required (or set LP_ACCOUNT)")
    quiet = options.pop("quiet")
    progress = sys.stderr.isatty() if quiet is None else not quiet
    try:
        delays = parse_delays(options.pop("retry_delays"))
        credentials = Credentials.from_env()
        return ApplySettings(
            changes=changes,
            results=options.pop("results") or _default_results(changes),
            retry_delays=delays,
            progress=progress,
            credentials=credentials,
            **{k: v for k, v in options.items() if k != "verbose"},
        )
    except UsageError as exc:
        _fail(str(exc))
    except pydantic.ValidationError as exc:
        _fail(validation_message(exc))
    raise AssertionError("unreachable")  # pragma: no cover


@cli.command()
@click.argument("changes", type=click.Path(path_type=Path, dir_okay=False))
def validate(changes: Path) -> None:
    """Parse and check CHANGES.csv without sending anything.

    Exit status: 0 every row is valid; 1 some rows are invalid (listed); 2 the file as a
    whole cannot be used.
    """
    from bulkusers.changes import InvalidRow, open_changes

    rows = invalid = 0
    users: set[int] = set()
    try:
        with open_changes(changes) as reader:
            for item in reader:
                rows += 1
                if isinstance(item, InvalidRow):
                    invalid += 1
                    click.echo(f"invalid: {item.message}")
                else:
                    users.add(item.user_id)
    except UsageError as exc:
        _fail(str(exc))
    click.echo(
        f"{changes}: {rows} rows, {rows - invalid} valid for {len(users)} users, {invalid} invalid"
    )
    sys.exit(1 if invalid else 0)


def _register() -> None:
    from bulkusers.check import check
    from bulkusers.simulator_cli import simulate

    cli.add_command(simulate)
    cli.add_command(check)


_register()


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    cli(prog_name="bulkusers")
