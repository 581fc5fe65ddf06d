"""The command line as a user meets it: help, usage errors, validate, and bad input of every
kind answered row by row while the good rows go on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import click
import pytest

from bulkusers.cli import cli
from bulkusers.simulator import RunningSimulator, ScriptedResponse, SimConfig, serve
from tests.e2e import apply_args, cli_env, read_results, run_cli, users_by_id, write_csv

pytestmark = pytest.mark.anyio

FIRST_ID = 10000001


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(SimConfig(users=20, seed=9)) as running:
        yield running


def test_every_option_of_every_command_is_documented() -> None:
    """--help of each command explains each of its options."""
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


async def test_help_runs_for_every_command() -> None:
    """`bulkusers COMMAND --help` works and names the SPEC's options."""
    done = await run_cli("apply", "--help")
    assert done.returncode == 0
    for option in ("--account", "--base-url", "--results", "--concurrency", "--rate",
                   "--max-attempts", "--retry-delays", "--dry-run", "--resume", "--log-file",
                   "--quiet / --progress", "--csds-url", "--sentinel-url"):  # fmt: skip
        assert option in done.stdout, option
    for command in ("validate", "simulate", "check"):
        assert (await run_cli(command, "--help")).returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--rate", "-1"], {}, "--rate"),
        (["--log-file", "/nonexistent/dir/run.log"], {}, "--log-file /nonexistent/dir/run.log"),
        (["--retry-delays", "5,x"], {}, "--retry-delays: 'x' is not a number of seconds"),
        (["--account", "bad account!"], {}, "--account ('bad account!')"),
        ([], {"LP_BEARER_TOKEN": "t", "LP_CLIENT_ID": "c", "LP_CLIENT_SECRET": "s"},
         "both LP_BEARER_TOKEN and LP_CLIENT_ID/LP_CLIENT_SECRET are set"),
        ([], {"LP_CLIENT_ID": "c"}, "LP_CLIENT_SECRET is not set"),
    ],
)  # fmt: skip
async def test_usage_errors_exit_2_before_any_request(
    sim: RunningSimulator, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """Bad options or credentials: one clear line, exit 2, nothing sent."""
    changes = write_csv(tmp_path / "c.csv", ["id", "maxChats"], [[FIRST_ID, 3]])
    done = await run_cli(*apply_args(changes, sim.url), *args, env=cli_env(**env))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert sim.sim.stats.requests == 0


async def test_no_credentials_against_a_remote_host_is_refused(tmp_path: Path) -> None:
    """Running without credentials is only for a loopback --base-url (the simulator)."""
    changes = write_csv(tmp_path / "c.csv", ["id", "maxChats"], [[FIRST_ID, 3]])
    done = await run_cli(*apply_args(changes, "https://va.ac.liveperson.net"))
    assert done.returncode == 2
    assert "no credentials" in done.stderr


async def test_missing_account_is_a_usage_error(tmp_path: Path) -> None:
    """--account (or LP_ACCOUNT) is required."""
    changes = write_csv(tmp_path / "c.csv", ["id", "maxChats"], [[FIRST_ID, 3]])
    done = await run_cli("apply", changes, "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "--account is required" in done.stderr


async def test_validate_lists_invalid_rows_without_network(tmp_path: Path) -> None:
    """validate parses and checks only: exit 1 with the invalid rows listed."""
    changes = write_csv(
        tmp_path / "c.csv", ["id", "maxChats"], [[FIRST_ID, 3], ["0", 3], [FIRST_ID, "x"]]
    )
    done = await run_cli("validate", changes)
    assert done.returncode == 1
    assert "invalid: row 2, column id:" in done.stdout
    assert "invalid: row 3, column maxChats:" in done.stdout
    assert "3 rows, 1 valid for 1 users, 2 invalid" in done.stdout
    good = write_csv(tmp_path / "g.csv", ["id", "maxChats"], [[FIRST_ID, 3]])
    assert (await run_cli("validate", good)).returncode == 0
    bad = write_csv(tmp_path / "b.csv", ["id", "deleted"], [[FIRST_ID, "true"]])
    done = await run_cli("validate", bad)
    assert done.returncode == 2
    assert "deleted" in done.stderr


async def test_bad_rows_of_every_kind_are_invalid_and_the_rest_go_on(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    """Non-UTF-8 bytes, NUL, a 10 MB cell, ragged rows, a quoted newline and bad ids each end
    `invalid` naming row and column; every good row is applied."""
    good = [FIRST_ID + i for i in range(6)]
    lines = [
        b"id,nickname,maxChats",
        f"{good[0]},Ann,4".encode(),
        f"{FIRST_ID + 10},Caf\xe9,4".encode("latin-1"),  # row 2: not UTF-8
        f"{FIRST_ID + 11},N\x00L,4".encode(),  # row 3: NUL
        f'{FIRST_ID + 12},"{"x" * 10_000_000}",4'.encode(),  # row 4: 10 MB cell
        f"{good[1]},Bo,5".encode(),
        f"{FIRST_ID + 13},Cy".encode(),  # row 6: ragged
        f'{good[2]},"Two\nLines",6'.encode(),  # row 7: a quoted newline is fine
        b" 12 3,Di,4",  # row 8: inner space
        b"+10000014,Ed,4",  # row 9: sign
        b"10000015.0,Fi,4",  # row 10: decimal
        b"010000016,Gu,4",  # row 11: leading zero
        b"99999999999999999999,Ha,4",  # row 12: overflow
        b"12/../13,Io,4",  # row 13: path
        "١٠٠٠٠٠١٧,Jo,4".encode(),  # row 14: Unicode digits
        f"{good[3]},Ka,7".encode(),
        f"{good[4]},Lu,8".encode(),
        f"{good[5]},Mo,9".encode(),
    ]
    changes = tmp_path / "c.csv"
    changes.write_bytes(b"\n".join(lines) + b"\n")
    done = await run_cli(*apply_args(changes, sim.url))
    assert done.returncode == 1
    rows = {int(r["row"]): r for r in read_results(tmp_path / "c.results.csv")}
    assert sorted(rows) == list(range(1, 18))
    invalid = {n: rows[n]["error"] for n in rows if rows[n]["outcome"] == "invalid"}
    assert sorted(invalid) == [2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14]
    assert invalid[2].startswith("row 2, column nickname:")
    assert "UTF-8" in invalid[2]
    assert invalid[3].startswith("row 3, column nickname:")
    assert "NUL" in invalid[3]
    assert invalid[4].startswith("row 4, column nickname:")
    assert "too large" in invalid[4]
    assert invalid[6].startswith("row 6")
    assert "2 cells" in invalid[6]
    for n in (8, 9, 10, 11, 12, 13, 14):
        assert invalid[n].startswith(f"row {n}, column id:"), invalid[n]
    users = users_by_id(sim.sim.snapshot())
    assert users[good[2]]["nickname"] == "Two\nLines"
    assert [users[uid]["maxChats"] for uid in good] == [4, 5, 6, 7, 8, 9]
    assert sim.sim.stats.gets == 6


BAD_ANSWERS = [
    (ScriptedResponse(status=200, body="<html>hi</html>", content_type="text/html",
                      headers={"ac-revision": "9"}), "answer is not JSON"),
    (ScriptedResponse(status=200, body="[]", headers={"ac-revision": "9"}),
     "answer is JSON of the wrong shape"),
    (ScriptedResponse(status=200, body=json.dumps({"id": 1}), headers={"ac-revision": "9"}),
     "answer is for user 1, not 10000001"),
    (ScriptedResponse(status=200, body=json.dumps({"id": FIRST_ID})),
     "answer has no ac-revision header"),
    (ScriptedResponse(status=502, body="<html><h1>Bad Gateway</h1></html>",
                      content_type="text/html"), "HTTP 502: Bad Gateway"),
    (ScriptedResponse(status=200, body="x" * 5_000_000, headers={"ac-revision": "9"}),
     "answer body larger than"),
    (ScriptedResponse(hang=True), "no answer within 0.5 s"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "message"), BAD_ANSWERS)
async def test_bad_server_answers_fail_that_row_only(
    sim: RunningSimulator, tmp_path: Path, answer: ScriptedResponse, message: str
) -> None:
    """An answer that cannot be used fails its row with a clear message after the retries;
    nothing is PUT for it and the other rows are applied."""
    sim.sim.script(FIRST_ID, "GET", [answer] * 3)
    changes = write_csv(
        tmp_path / "c.csv", ["id", "maxChats"], [[FIRST_ID + i, 37] for i in range(5)]
    )
    done = await run_cli(
        *apply_args(changes, sim.url, "--retry-delays", "0.01,0.01", "--read-timeout", "0.5")
    )
    assert done.returncode == 1
    rows = {int(r["row"]): r for r in read_results(tmp_path / "c.results.csv")}
    assert rows[1]["outcome"] == "failed"
    assert message in rows[1]["error"]
    assert [rows[n]["outcome"] for n in range(2, 6)] == ["updated"] * 4
    users = users_by_id(sim.sim.snapshot())
    assert users[FIRST_ID]["maxChats"] != 37
    assert [users[FIRST_ID + i]["maxChats"] for i in range(1, 5)] == [37] * 4
    assert sim.sim.stats.puts == 4
