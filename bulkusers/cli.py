"""The `bulkusers` command: parses options, builds the settings, wires the parts together."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkusers")
def cli() -> None:
    """Bulk-update LivePerson Conversational Cloud users from a CSV of changes."""


def _register() -> None:
    from bulkusers.simulator_cli import simulate

    cli.add_command(simulate)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulkusers")
