"""Helpers for end-to-end tests: the real CLI in a subprocess against the real simulator."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

#: Retry delays for tests: the policy's shape, a thousandth of its length.
FAST_RETRIES = "0.005,0.01,0.015,0.02,0.025,0.03"
ACCOUNT = "123"


@dataclass(frozen=True)
class Completed:
    """A finished CLI run."""

    returncode: int
    stdout: str
    stderr: str


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no LP_* credentials and no proxy unless given
    (tests talk to 127.0.0.1 only; a machine-wide HTTP_PROXY must not reroute them)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LP_") and not k.lower().endswith("_proxy")
    }
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 90
) -> Completed:
    """Run `python -m bulkusers ARGS` to completion (the simulator keeps serving meanwhile)."""
    command = [sys.executable, "-m", "bulkusers", *map(str, args)]
    with anyio.fail_after(timeout):
        done = await anyio.run_process(
            command,
            check=False,
            env=env or cli_env(),
            stdin=subprocess.DEVNULL,
        )
    return Completed(done.returncode, done.stdout.decode(), done.stderr.decode())


def apply_args(changes: Path, url: str, *extra: str | Path) -> list[str | Path]:
    """`apply` against a simulator with fast retries and no rate cap unless overridden."""
    return [
        "apply",
        changes,
        "--account",
        ACCOUNT,
        "--base-url",
        url,
        "--retry-delays",
        FAST_RETRIES,
        "--rate",
        "0",
        "--quiet",
        *extra,
    ]


def read_results(path: Path) -> list[dict[str, str]]:
    """The results file as dicts, in file order."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(
    path: Path, header: list[str], rows: list[list[Any]], *, delimiter: str = ","
) -> Path:
    """A changes file."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def users_by_id(snapshot: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The simulator's users keyed by id."""
    return {int(u["id"]): u for u in snapshot["users"]}


#: Attributes the server rewrites on every accepted PUT.
SERVER_MANAGED = frozenset({"revision", "dateUpdated"})


def without(entity: dict[str, Any], keys: frozenset[str] | set[str]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k not in keys}
