"""`bulkusers check`: the read-only preflight, run as the real CLI against healthy and broken
simulators, plus its answers to Users-API replies no simulator gives."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from pydantic import SecretStr

from bulkusers.check import CheckFailed, CheckSettings, _describe_expiry, run_check
from bulkusers.errors import AuthRefused, LookupError_
from bulkusers.settings import Credentials
from bulkusers.simulator import RunningSimulator, SimConfig, serve
from tests.e2e import cli_env, run_cli

pytestmark = pytest.mark.anyio

ACCOUNT = "123"
CLIENT_ID = "check-app"
SECRET = "s3cr3t-XYZZY-check"


def sim_config(**overrides: object) -> SimConfig:
    values: dict[str, object] = {
        "users": 42,
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(SECRET),
        "require_auth": True,
    }
    values.update(overrides)
    return SimConfig.model_validate(values)


def oauth_env(secret: str = SECRET) -> dict[str, str]:
    return cli_env(LP_CLIENT_ID=CLIENT_ID, LP_CLIENT_SECRET=secret)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(sim_config()) as running:
        yield running


async def test_check_on_a_healthy_account_reports_what_it_found(sim: RunningSimulator) -> None:
    """Exit 0; hosts, token expiry, user count and latency printed; one GET, no PUT."""
    done = await run_cli("check", "--account", ACCOUNT, "--csds-url", sim.url, env=oauth_env())
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert f"users host   {sim.url} (accountConfigReadOnly, for reading)" in out
    assert f"write host   {sim.url} (accountConfigReadWrite, what apply uses)" in out
    assert f"token host   {sim.url}" in out
    assert f"client id '{CLIENT_ID}'" in out
    assert re.search(
        r"token +obtained; expires in 59 min \d+ s \(\d{4}-\d\d-\d\d [\d:]+ UTC\)", out
    )
    assert re.search(r"users +42 readable \(round trip \d+ ms, HTTP 200\)", out)
    assert "result       OK" in out
    stats = sim.sim.stats
    assert (stats.gets, stats.puts) == (1, 0)
    assert stats.domain_lookups == {
        "accountConfigReadOnly": 1,
        "accountConfigReadWrite": 1,
        "sentinel": 1,
    }
    assert SECRET not in out


async def test_check_without_credentials_against_a_loopback_base_url() -> None:
    """The simulator without auth: --base-url alone is enough, nothing is looked up."""
    async with serve(SimConfig(users=7)) as sim:
        done = await run_cli("check", "--account", ACCOUNT, "--base-url", sim.url)
        assert sim.sim.stats.domain_lookups == {}
    assert done.returncode == 0, done.stderr
    assert f"users host   {sim.url} (--base-url)" in done.stdout
    assert "credential   no credentials" in done.stdout
    assert re.search(r"users +7 readable", done.stdout)


async def test_check_with_a_wrong_secret_exits_3(sim: RunningSimulator) -> None:
    """A refused client secret: exit 3 and one line naming the client id, not the secret."""
    wrong = "s3cr3t-XYZZY-wrong"
    done = await run_cli("check", "--account", ACCOUNT, "--csds-url", sim.url, env=oauth_env(wrong))
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"bulkusers: check failed: the token endpoint at {sim.url}")
    assert f"refused client id '{CLIENT_ID}' (LP_CLIENT_ID/LP_CLIENT_SECRET)" in lines[0]
    assert wrong not in done.stderr + done.stdout
    assert sim.sim.stats.requests == 0


async def test_check_of_an_unknown_account_exits_2(sim: RunningSimulator) -> None:
    """The Domain API does not know the account: exit 2, the reason in one line."""
    done = await run_cli("check", "--account", "nosuch", "--csds-url", sim.url, env=oauth_env())
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"bulkusers: check failed: the Domain API at {sim.url} does not know service "
        "'accountConfigReadOnly' of account 'nosuch' (HTTP 404: account nosuch not found); "
        "check --account (service names are case-sensitive)"
    )
    assert sim.sim.stats.requests == 0


async def test_check_when_the_users_api_answers_503_fails_with_the_reason() -> None:
    """Hosts and token fine, the Users API down: non-zero (1) and the status in the reason."""
    async with serve(sim_config(error_fraction=1.0)) as sim:
        done = await run_cli("check", "--account", ACCOUNT, "--csds-url", sim.url, env=oauth_env())
    assert done.returncode == 1
    assert re.fullmatch(
        rf"bulkusers: check failed: the Users API at {re.escape(sim.url)} could not be read: "
        r"HTTP 50[023]: .*\n",
        done.stderr,
    )
    assert "token        obtained" in done.stdout
    assert "result" not in done.stdout


async def test_check_with_a_refused_bearer_token_exits_3(sim: RunningSimulator) -> None:
    """A bearer token the Users API does not accept: exit 3 naming LP_BEARER_TOKEN."""
    bearer = "b3ar3r-XYZZY-unknown"
    done = await run_cli(
        "check",
        "--account",
        ACCOUNT,
        "--csds-url",
        sim.url,
        env=cli_env(LP_BEARER_TOKEN=bearer),
    )
    assert done.returncode == 3
    assert done.stderr.strip() == (
        "bulkusers: check failed: the server refused the bearer token in LP_BEARER_TOKEN; "
        "HTTP 401: unknown bearer token"
    )
    assert bearer not in done.stdout + done.stderr


async def test_check_renews_a_token_refused_by_the_users_api(sim: RunningSimulator) -> None:
    """A token the server already forgot: one renewal, then the read succeeds."""
    out = io.StringIO()
    settings = CheckSettings(
        account=ACCOUNT,
        csds_url=sim.url,
        credentials=Credentials.from_env({"LP_CLIENT_ID": CLIENT_ID, "LP_CLIENT_SECRET": SECRET}),
    )
    original = sim.sim.issue_token
    forgotten = iter([True])

    def issue_token(subject: str | None = None) -> str:
        token = original(subject)
        if next(forgotten, False):
            return token + "-forgotten"  # the server will not know this one
        return token

    sim.sim.issue_token = issue_token  # type: ignore[method-assign]
    report = await run_check(settings, out=out)
    assert report.users == 42
    assert sim.sim.stats.tokens_issued == 2
    assert sim.sim.stats.by_status == {401: 1, 200: 1}


# -- answers the simulator never gives ---------------------------------------------------------


async def _check_against(status: int, body: str) -> str:
    """Run the check against a server answering the user list with `status` and `body`."""

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    server = web.Server(handler)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        out = io.StringIO()
        await run_check(CheckSettings(account=ACCOUNT, base_url=url), out=out)
        return out.getvalue()
    finally:
        await runner.cleanup()


async def test_forbidden_names_the_missing_scopes() -> None:
    """403: the credential is valid but not allowed: AuthRefused naming the scopes."""
    with pytest.raises(AuthRefused) as info:
        await _check_against(403, '{"message": "insufficient scope"}')
    assert "users.read and users.write" in str(info.value)
    assert "insufficient scope" in str(info.value)


async def test_not_found_on_the_users_host_is_a_lookup_error() -> None:
    """404 on the user list: the host does not serve this account (exit 2)."""
    with pytest.raises(LookupError_) as info:
        await _check_against(404, '{"message": "account 123 not found"}')
    assert "does not know account '123'" in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [("<html>ok</html>", "not JSON"), ('{"users": []}', "not a user list")],
)
async def test_a_list_that_is_not_a_list_fails_the_check(body: str, expected: str) -> None:
    """A 200 whose body is not a JSON list of users: exit 1 with the reason."""
    with pytest.raises(CheckFailed) as info:
        await _check_against(200, body)
    assert expected in str(info.value)
    assert info.value.exit_code == 1


def test_expiry_is_shown_in_minutes_and_utc() -> None:
    """Long tokens in min/s, short ones in seconds, always with the UTC time."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert _describe_expiry(3599.4, at) == (
        "obtained; expires in 59 min 59 s (2026-01-02 03:04:05 UTC), renewed before"
    )
    assert _describe_expiry(42.25, at).startswith("obtained; expires in 42.2 s")
    assert "no expiry given" in _describe_expiry(None, None)
