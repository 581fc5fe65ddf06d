"""Finding the account and proving who we are: the Domain API lookup, connect(), TLS and
proxies, and the real `bulkusers apply` CLI taking the whole path (lookup -> token -> run)
against the simulator on loopback, including tokens that expire mid-run and secrets that
must never show."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from pydantic import SecretStr

from bulkusers.auth import NoAuth, OAuthClientCredentials, StaticBearer
from bulkusers.client import Transport, make_session
from bulkusers.clock import FakeClock
from bulkusers.connect import connect, refused_message, ssl_context
from bulkusers.domain import SERVICE_READ_WRITE, DomainApi
from bulkusers.errors import AuthRefused, LookupError_, UsageError
from bulkusers.settings import ApplySettings, Credentials
from bulkusers.simulator import RunningSimulator, SimConfig, serve
from tests.e2e import cli_env, read_results, run_cli, write_csv

pytestmark = pytest.mark.anyio

ACCOUNT = "123"
CLIENT_ID = "bulk-app"
SECRET = "s3cr3t-XYZZY-client-secret-4711"
BEARER = "b3ar3r-XYZZY-token-0815"
PASSWORD = "Pw-XYZZY-new-password-42"
FAST_RETRIES = "0.005,0.01,0.015"
#: Every JWT starts with the base64 of '{"', so no issued token may show up anywhere.
JWT_PREFIX = "eyJ"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def settings(**overrides: Any) -> ApplySettings:
    values: dict[str, Any] = {
        "changes": Path("changes.csv"),
        "results": Path("results.csv"),
        "account": ACCOUNT,
        "credentials": Credentials(),
    }
    values.update(overrides)
    return ApplySettings(**values)


def oauth_credentials(secret: str = SECRET) -> Credentials:
    return Credentials.from_env({"LP_CLIENT_ID": CLIENT_ID, "LP_CLIENT_SECRET": secret})


def oauth_env(secret: str = SECRET) -> dict[str, str]:
    return cli_env(LP_CLIENT_ID=CLIENT_ID, LP_CLIENT_SECRET=secret)


def sim_config(**overrides: Any) -> SimConfig:
    values: dict[str, Any] = {
        "users": 20,
        "client_id": CLIENT_ID,
        "client_secret": SecretStr(SECRET),
        "require_auth": True,
    }
    values.update(overrides)
    return SimConfig(**values)


@asynccontextmanager
async def tiny_server(
    handler: Handler, *, ssl: Any = None
) -> AsyncIterator[tuple[str, list[web.BaseRequest]]]:
    """A loopback server answering every request with `handler`; yields its origin and the
    requests it saw."""
    seen: list[web.BaseRequest] = []

    async def record(request: web.BaseRequest) -> web.StreamResponse:
        seen.append(request)
        return await handler(request)

    server = web.Server(record)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def closed_port_url() -> str:
    """An http origin on loopback where nothing listens any more."""
    async with serve(SimConfig(users=0)) as gone:
        return gone.url


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(sim_config()) as running:
        yield running


# -- the Domain API ----------------------------------------------------------------------------


async def test_lookup_answers_the_bare_host_with_the_csds_scheme_once(
    sim: RunningSimulator,
) -> None:
    """`127.0.0.1:PORT` comes back and is reached over http (the --csds-url scheme);
    a second ask is answered from the cache."""
    async with aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=sim.url + "/", account=ACCOUNT)
        first = await domain.base_url(SERVICE_READ_WRITE)
        second = await domain.base_url(SERVICE_READ_WRITE)
    assert first == second == sim.url
    assert sim.sim.stats.domain_lookups == {SERVICE_READ_WRITE: 1}
    assert domain.lookups == 1


@pytest.mark.parametrize(
    ("account", "service", "expected"),
    [
        (
            "999",
            SERVICE_READ_WRITE,
            "does not know service 'accountConfigReadWrite' of account '999'",
        ),
        (ACCOUNT, "accountconfigreadwrite", "does not know service 'accountconfigreadwrite'"),
    ],
)
async def test_unknown_account_or_service_is_a_lookup_error(
    sim: RunningSimulator, account: str, service: str, expected: str
) -> None:
    """A 404 from the Domain API: LookupError_ (exit 2) naming the account and service."""
    async with aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=sim.url, account=account)
        with pytest.raises(LookupError_) as info:
            await domain.base_url(service)
    assert expected in str(info.value)
    assert "HTTP 404" in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


async def test_unreachable_domain_api_is_retried_a_bounded_number_of_times() -> None:
    """Nothing listening: three attempts, pauses on the injected clock, then LookupError_."""
    url = await closed_port_url()
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=url, account=ACCOUNT, clock=clock)
        with pytest.raises(LookupError_) as info:
            await domain.base_url(SERVICE_READ_WRITE)
    message = str(info.value)
    assert message.startswith(f"the Domain API at {url} is unreachable: connection failed")
    assert "after 3 attempts" in message
    assert domain.lookups == 3
    assert clock.slept == [0.5, 1.0]


async def test_domain_api_5xx_is_retried_then_succeeds() -> None:
    """A 503 and a 502 are transient: the third attempt's answer is used."""
    answers = [503, 502, 200]

    async def handler(request: web.BaseRequest) -> web.Response:
        status = answers.pop(0)
        if status != 200:
            return web.Response(status=status, text="<html>busy</html>")
        return web.json_response({"baseURI": "va.ac.example.net"})

    clock = FakeClock()
    async with tiny_server(handler) as (url, seen), aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=url, account=ACCOUNT, clock=clock)
        assert await domain.base_url(SERVICE_READ_WRITE) == "http://va.ac.example.net"
    assert len(seen) == 3
    assert seen[0].path_qs == (
        "/api/account/123/service/accountConfigReadWrite/baseURI.json?version=1.0"
    )


async def test_domain_api_times_out_within_the_bound() -> None:
    """An answer that never comes costs `timeout` per attempt, not forever."""
    release = anyio.Event()

    async def handler(request: web.BaseRequest) -> web.Response:
        await release.wait()
        return web.json_response({"baseURI": "late.example.net"})

    started = time.monotonic()
    async with tiny_server(handler) as (url, seen), aiohttp.ClientSession() as session:
        domain = DomainApi(
            session, csds_url=url, account=ACCOUNT, timeout=0.1, delays=(0.0,), clock=FakeClock()
        )
        with pytest.raises(LookupError_) as info:
            await domain.base_url(SERVICE_READ_WRITE)
        release.set()
    assert "no answer within 0.1 s" in str(info.value)
    assert len(seen) == 2
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"baseURI": "evil.example.net/steal?x="}, "unusable host"),
        ({"baseURI": "https://va.ac.example.net"}, "unusable host"),
        ({"service": SERVICE_READ_WRITE}, "without a host"),
        ([1, 2, 3], "without a host"),
        ({"baseURIs": [{"service": "sentinel", "baseURI": "x.example.net"}]}, "without a host"),
    ],
)
async def test_domain_api_answers_that_are_not_a_bare_host_are_refused(
    payload: Any, expected: str
) -> None:
    """Only a bare host[:port] is accepted: a path, a scheme or nothing is a LookupError_."""

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.json_response(payload)

    async with tiny_server(handler) as (url, _), aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=url, account=ACCOUNT)
        with pytest.raises(LookupError_) as info:
            await domain.base_url(SERVICE_READ_WRITE)
    assert expected in str(info.value)


async def test_all_services_answer_form_is_understood() -> None:
    """A `baseURIs` list (the all-services form) gives the entry for the service asked."""

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.json_response(
            {
                "baseURIs": [
                    {"service": "sentinel", "baseURI": "sentinel.example.net"},
                    {"service": SERVICE_READ_WRITE, "baseURI": "va.ac.example.net:8443"},
                ]
            }
        )

    async with tiny_server(handler) as (url, _), aiohttp.ClientSession() as session:
        domain = DomainApi(session, csds_url=url, account=ACCOUNT)
        assert await domain.base_url(SERVICE_READ_WRITE) == "http://va.ac.example.net:8443"


# -- connect() -------------------------------------------------------------------------------


async def test_connect_resolves_both_hosts_and_fetches_a_token(sim: RunningSimulator) -> None:
    """No --base-url: account-config and sentinel come from the Domain API, the first token
    is fetched before any user request."""
    async with aiohttp.ClientSession() as session:
        connection = await connect(
            settings(csds_url=sim.url, credentials=oauth_credentials()), session
        )
    assert connection.base_url == sim.url
    assert connection.sentinel_url == sim.url
    assert connection.service == SERVICE_READ_WRITE
    assert isinstance(connection.auth, OAuthClientCredentials)
    assert sim.sim.stats.domain_lookups == {SERVICE_READ_WRITE: 1, "sentinel": 1}
    assert sim.sim.stats.tokens_issued == 1
    assert sim.sim.stats.requests == 0


async def test_sentinel_url_overrides_the_token_host(sim: RunningSimulator) -> None:
    """--sentinel-url: no sentinel lookup, the token comes from there."""
    async with serve(sim_config()) as other, aiohttp.ClientSession() as session:
        connection = await connect(
            settings(csds_url=sim.url, sentinel_url=other.url, credentials=oauth_credentials()),
            session,
        )
        assert connection.sentinel_url == other.url
        assert other.sim.stats.tokens_issued == 1
    assert sim.sim.stats.tokens_issued == 0
    assert sim.sim.stats.domain_lookups == {SERVICE_READ_WRITE: 1}


async def test_bearer_token_needs_no_sentinel(sim: RunningSimulator) -> None:
    """LP_BEARER_TOKEN: only the account-config host is looked up."""
    creds = Credentials.from_env({"LP_BEARER_TOKEN": BEARER})
    async with aiohttp.ClientSession() as session:
        connection = await connect(settings(csds_url=sim.url, credentials=creds), session)
    assert isinstance(connection.auth, StaticBearer)
    assert await connection.auth.header() == f"Bearer {BEARER}"
    assert sim.sim.stats.domain_lookups == {SERVICE_READ_WRITE: 1}


async def test_read_only_connect_uses_the_read_only_service(sim: RunningSimulator) -> None:
    """`check` reads through accountConfigReadOnly."""
    creds = Credentials.from_env({"LP_BEARER_TOKEN": BEARER})
    async with aiohttp.ClientSession() as session:
        connection = await connect(
            settings(csds_url=sim.url, credentials=creds), session, read_only=True
        )
    assert connection.service == "accountConfigReadOnly"
    assert sim.sim.stats.domain_lookups == {"accountConfigReadOnly": 1}


@pytest.mark.parametrize("base_url", [None, "https://va.ac.liveperson.net"])
async def test_no_credentials_only_against_a_loopback_base_url(
    sim: RunningSimulator, base_url: str | None
) -> None:
    """Without credentials only the simulator may be used; nothing is looked up first."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UsageError) as info:
            await connect(settings(csds_url=sim.url, base_url=base_url), session)
        connection = await connect(settings(base_url=sim.url), session)
    assert "no credentials" in str(info.value)
    assert isinstance(connection.auth, NoAuth)
    assert sim.sim.stats.domain_lookups == {}


async def test_wrong_secret_stops_connect_with_auth_refused(sim: RunningSimulator) -> None:
    """A refused secret is AuthRefused (exit 3) naming the client id, never the secret."""
    wrong = "s3cr3t-XYZZY-wrong"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthRefused) as info:
            await connect(settings(csds_url=sim.url, credentials=oauth_credentials(wrong)), session)
    assert info.value.exit_code == 3
    assert f"client id '{CLIENT_ID}'" in str(info.value)
    assert wrong not in str(info.value)
    assert sim.sim.stats.tokens_refused == 1


async def test_refused_message_names_the_credential() -> None:
    """The stop message says which credential was refused and what the server said."""
    oauth = OAuthClientCredentials(_NeverFetch(), client_id="abc")
    assert refused_message(oauth, "HTTP 401: bearer token expired") == (
        "the server refused the OAuth token for client id 'abc' "
        "(LP_CLIENT_ID/LP_CLIENT_SECRET); HTTP 401: bearer token expired"
    )
    bearer = StaticBearer(SecretStr(BEARER))
    assert refused_message(bearer, None) == (
        "the server refused the bearer token in LP_BEARER_TOKEN"
    )
    assert "LP_CLIENT_ID" in refused_message(NoAuth(), "HTTP 401")


class _NeverFetch:
    async def fetch(self) -> Any:  # pragma: no cover - never called
        raise AssertionError("no token expected")


# -- TLS and proxies -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM)."""
    if shutil.which("openssl") is None:  # pragma: no cover
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


async def test_tls_is_verified_and_ca_bundle_is_trusted(certificate: tuple[Path, Path]) -> None:
    """A self-signed Domain API fails verification, unless --ca-bundle trusts its CA; the
    host it returns is then reached over https too."""
    import ssl

    cert, key = certificate
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.json_response({"baseURI": "va.ac.example.net"})

    async with tiny_server(handler, ssl=server_ssl) as (url, seen):
        for bundle, expected in ((None, "CERTIFICATE_VERIFY_FAILED"), (cert, "")):
            transport = Transport()
            async with make_session(
                concurrency=2, transport=transport, ssl=ssl_context(bundle)
            ) as session:
                domain = DomainApi(
                    session, csds_url=url, account=ACCOUNT, delays=(), clock=FakeClock()
                )
                if expected:
                    with pytest.raises(LookupError_) as info:
                        await domain.base_url(SERVICE_READ_WRITE)
                    assert expected in str(info.value)
                else:
                    assert await domain.base_url(SERVICE_READ_WRITE) == "https://va.ac.example.net"
    assert len(seen) == 1


def test_unusable_ca_bundle_is_a_usage_error(tmp_path: Path) -> None:
    """A --ca-bundle with no certificates in it: exit 2 naming the file."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(UsageError) as info:
        ssl_context(bundle)
    assert str(bundle) in str(info.value)
    assert ssl_context(None) is True


async def test_proxy_from_the_environment_carries_lookup_and_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured for the Domain API and the token endpoint (the run's session),
    NO_PROXY exempts a host."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)

    async def proxy(request: web.BaseRequest) -> web.Response:
        if request.method == "POST":
            return web.json_response({"access_token": "opaque", "expires_in": 60})
        return web.json_response({"baseURI": "hosts.bulkusers.invalid"})

    async with tiny_server(proxy) as (proxy_url, seen):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "direct.bulkusers.invalid")
        async with make_session(concurrency=2, transport=Transport()) as session:
            connection = await connect(
                settings(csds_url="http://csds.bulkusers.invalid", credentials=oauth_credentials()),
                session,
            )
            with pytest.raises(LookupError_) as info:
                await DomainApi(
                    session,
                    csds_url="http://direct.bulkusers.invalid",
                    account=ACCOUNT,
                    delays=(),
                ).base_url(SERVICE_READ_WRITE)
    assert connection.base_url == "http://hosts.bulkusers.invalid"
    assert [(r.method, r.host) for r in seen] == [
        ("GET", "csds.bulkusers.invalid"),
        ("GET", "csds.bulkusers.invalid"),
        ("POST", "hosts.bulkusers.invalid"),
    ]
    assert "unreachable" in str(info.value)


# -- the real CLI, end to end ----------------------------------------------------------------


def nickname_changes(path: Path, sim: RunningSimulator, count: int) -> list[int]:
    ids = sorted(sim.sim.users)[:count]
    write_csv(path, ["id", "nickname"], [[uid, f"renamed {uid}"] for uid in ids])
    return ids


def apply_args(changes: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "apply", changes, "--account", ACCOUNT, "--retry-delays", FAST_RETRIES, "--quiet", *extra,
    ]  # fmt: skip


def assert_all_updated(results: Path, ids: list[int], sim: RunningSimulator) -> None:
    rows = sorted(read_results(results), key=lambda r: int(r["row"]))
    assert [(r["id"], r["outcome"]) for r in rows] == [(str(uid), "updated") for uid in ids]
    assert all(sim.sim.users[uid]["nickname"] == f"renamed {uid}" for uid in ids)


async def timed_oauth_run(tmp_path: Path, sim: RunningSimulator, *, rate: str) -> float:
    """300 nickname changes through lookup -> token -> run with 16 workers; asserts every
    row updated and returns the run's wall time."""
    ids = nickname_changes(tmp_path / "changes.csv", sim, 300)
    started = time.monotonic()
    done = await run_cli(
        *apply_args(
            tmp_path / "changes.csv", "--csds-url", sim.url, "--concurrency", "16",
            "--rate", rate,
        ),
        env=oauth_env(),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert_all_updated(tmp_path / "changes.results.csv", ids, sim)
    return elapsed


async def test_full_path_renews_expiring_tokens_once_each(tmp_path: Path) -> None:
    """No --base-url: lookup -> token -> run. Tokens live 0.5 s in a ~2 s run: each is
    renewed once, a margin before it expires, by one worker of 16; no request is refused."""
    async with serve(sim_config(users=300, token_ttl=0.5, latency_ms=20)) as sim:
        elapsed = await timed_oauth_run(tmp_path, sim, rate="300")
        stats = sim.sim.stats
        assert stats.domain_lookups == {SERVICE_READ_WRITE: 1, "sentinel": 1}
        assert stats.by_status.get(401, 0) == 0
        renewals = stats.tokens_issued - 1
        # One renewal per 0.45 s of token life at most (0.5 s less a 10% margin).
        assert 2 <= renewals <= elapsed / 0.45 + 1
        assert stats.requests == 600


async def test_tokens_the_server_expires_early_are_renewed_once_per_expiry(
    tmp_path: Path,
) -> None:
    """The server's clock runs at twice the speed, so tokens die at half their announced
    life and every worker in flight gets a 401 for the same token: one renewal serves all
    of them, no row is lost."""
    origin = time.time()

    def fast_clock() -> float:
        return origin + 2 * (time.time() - origin)

    config = sim_config(users=300, token_ttl=1.0, latency_ms=40)
    async with serve(config, clock=fast_clock) as sim:
        elapsed = await timed_oauth_run(tmp_path, sim, rate="0")
        stats = sim.sim.stats
        refused = stats.by_status.get(401, 0)
        renewals = stats.tokens_issued - 1
        assert renewals >= 1
        assert renewals <= elapsed / 0.5 + 1  # at most one per server-side expiry
        assert renewals < refused <= 16 * renewals  # many refused, one renewal each time
        assert stats.requests == 600 + refused


async def test_refused_bearer_token_stops_the_run_naming_it(tmp_path: Path) -> None:
    """A 401 that no renewal can fix: exit 3, the summary names LP_BEARER_TOKEN, every row
    is left for --resume."""
    async with serve(sim_config(users=3)) as sim:
        nickname_changes(tmp_path / "changes.csv", sim, 3)
        done = await run_cli(
            *apply_args(tmp_path / "changes.csv", "--csds-url", sim.url, "--rate", "0"),
            env=cli_env(LP_BEARER_TOKEN=BEARER),
        )
    assert done.returncode == 3
    assert done.stdout.splitlines()[0] == (
        "bulkusers: run STOPPED: the server refused the bearer token in LP_BEARER_TOKEN; "
        "HTTP 401: unknown bearer token"
    )
    outcomes = {r["outcome"] for r in read_results(tmp_path / "changes.results.csv")}
    assert outcomes == {"skipped"}
    assert BEARER not in done.stdout + done.stderr


async def test_wrong_secret_stops_within_seconds_with_few_requests(tmp_path: Path) -> None:
    """A refused client secret: exit 3 at once, naming the client id, no user touched."""
    async with serve(sim_config(users=5)) as sim:
        nickname_changes(tmp_path / "changes.csv", sim, 5)
        started = time.monotonic()
        done = await run_cli(
            *apply_args(tmp_path / "changes.csv", "--csds-url", sim.url),
            env=oauth_env("s3cr3t-XYZZY-wrong"),
        )
        stats = sim.sim.stats
        total = sum(stats.domain_lookups.values()) + stats.tokens_refused + stats.requests
    assert done.returncode == 3
    assert time.monotonic() - started < 5
    assert total < 10
    assert stats.requests == 0
    assert f"refused client id '{CLIENT_ID}' (LP_CLIENT_ID/LP_CLIENT_SECRET)" in done.stderr
    assert "XYZZY" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


async def test_unknown_account_exits_2_before_any_user_request(tmp_path: Path) -> None:
    """The Domain API does not know the account: exit 2, one line, no Users-API call."""
    async with serve(sim_config(users=5)) as sim:
        nickname_changes(tmp_path / "changes.csv", sim, 5)
        args = apply_args(tmp_path / "changes.csv", "--csds-url", sim.url)
        args[args.index(ACCOUNT)] = "nosuch42"
        done = await run_cli(*args, env=oauth_env())
        assert sim.sim.stats.requests == 0
        assert sim.sim.stats.tokens_issued == 0
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"bulkusers: error: the Domain API at {sim.url} does not know service "
        "'accountConfigReadWrite' of account 'nosuch42' (HTTP 404: account nosuch42 not found); "
        "check --account (service names are case-sensitive)"
    )


async def test_method_override_and_api_version_reach_the_server(tmp_path: Path) -> None:
    """--method-override sends POST + X-HTTP-Method-Override: PUT; --api-version sets v=."""
    async with serve(sim_config(users=5)) as sim:
        ids = nickname_changes(tmp_path / "changes.csv", sim, 5)
        done = await run_cli(
            *apply_args(
                tmp_path / "changes.csv", "--csds-url", sim.url, "--method-override",
                "--api-version", "5.0", "--rate", "0",
            ),
            env=oauth_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert_all_updated(tmp_path / "changes.results.csv", ids, sim)
        stats = sim.sim.stats.to_dict()
    assert stats["by_version"] == {"5.0": 10}
    assert stats["by_method"] == {"GET": 5, "POST": 5}
    assert stats["by_method_override"] == {"PUT": 5}


# -- secrets ---------------------------------------------------------------------------------


async def test_secrets_never_show_in_output_logs_or_results(tmp_path: Path) -> None:
    """The client secret, every issued token, a bearer token and a passwordSh value appear in
    no stdout, stderr, log file or results file, on success and on refusal."""
    seen: list[str] = []
    async with serve(sim_config(users=6, bearer_tokens=(BEARER,))) as sim:
        ids = sorted(sim.sim.users)[:6]
        changes = write_csv(
            tmp_path / "changes.csv",
            ["id", "nickname", "passwordSh"],
            [[uid, f"n{uid}", PASSWORD] for uid in ids[:3]]
            + [[uid, f"n{uid}", ""] for uid in ids[3:5]]
            + [[ids[5], "n", "#N/A"]],  # refused by the parser: the row ends invalid
        )
        runs = [
            (oauth_env(), "oauth", 1),
            (cli_env(LP_BEARER_TOKEN=BEARER), "bearer", 1),
            (oauth_env("s3cr3t-XYZZY-wrong"), "refused", 3),
        ]
        for env, name, code in runs:
            log_file = tmp_path / f"{name}.log"
            results = tmp_path / f"{name}.results.csv"
            done = await run_cli(
                *apply_args(changes, "--csds-url", sim.url, "--results", results),
                "--log-file", log_file, "-v", "--rate", "0",
                env=env,
            )  # fmt: skip
            assert done.returncode == code, done.stderr
            seen += [done.stdout, done.stderr, log_file.read_text()]
            # A credential refused at start sends nothing, so it leaves no results file.
            assert results.exists() == (name != "refused")
            seen += [results.read_text()] if results.exists() else []
        check = await run_cli("check", "--account", ACCOUNT, "--csds-url", sim.url, env=oauth_env())
        assert check.returncode == 0, check.stderr
        seen += [check.stdout, check.stderr]
        assert sim.sim.password_matches(ids[0], PASSWORD)
        assert sim.sim.stats.tokens_issued == 2
    everything = "\n".join(seen)
    assert f"{ids[0]},updated" in everything  # sanity: the runs did write what they did
    for secret in (SECRET, "s3cr3t-XYZZY-wrong", BEARER, PASSWORD, "XYZZY", JWT_PREFIX):
        assert secret not in everything


def test_reprs_of_settings_and_authorizers_hide_secrets() -> None:
    """repr() and str() of the settings and every authorizer hold no secret."""
    oauth_settings = settings(credentials=oauth_credentials())
    bearer = Credentials.from_env({"LP_BEARER_TOKEN": BEARER})
    texts = [
        repr(oauth_settings),
        str(oauth_settings),
        repr(bearer),
        str(bearer),
        repr(StaticBearer(SecretStr(BEARER))),
        repr(OAuthClientCredentials(_NeverFetch(), client_id=CLIENT_ID)),
        str(oauth_settings.model_dump()),
    ]
    assert CLIENT_ID in texts[0]
    for text in texts:
        assert "XYZZY" not in text
