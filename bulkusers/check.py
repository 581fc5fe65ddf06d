"""`bulkusers check`: a read-only preflight that finds the hosts, obtains a token and reads the
user list, so a 50,000-row run does not discover a wrong secret or host at row one."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import aiohttp
import anyio
import click
import pydantic
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from bulkusers.auth import Authorizer, OAuthClientCredentials
from bulkusers.classify import server_message
from bulkusers.client import (
    DEFAULT_API_VERSION,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_READ_TIMEOUT,
    USERS_PATH,
    Transport,
    make_session,
    read_capped,
)
from bulkusers.connect import Connection, connect, refused_message, ssl_context
from bulkusers.domain import SERVICE_READ_WRITE, describe_exception
from bulkusers.errors import AuthRefused, BulkUsersError, LookupError_, UsageError
from bulkusers.options import connection_options, validation_message
from bulkusers.settings import ACCOUNT_PATTERN, DEFAULT_CSDS_URL, Credentials

#: The user list is read with ids only: enough to count users, cheap for 18,000 of them.
USERS_SELECT = "id"
#: The list of 18,000 ids is ~400 KB; allow far more before refusing to read it.
MAX_LIST_BODY = max(DEFAULT_MAX_BODY, 32 * 1024 * 1024)


Say = Callable[[str, str], None]


class CheckFailed(BulkUsersError):
    """The hosts and credentials are fine but the Users API could not be read (exit 1)."""


class CheckSettings(BaseModel):
    """Everything `check` needs: where to connect and as whom."""

    model_config = ConfigDict(frozen=True)

    account: str = Field(pattern=ACCOUNT_PATTERN)
    base_url: str | None = None
    csds_url: str = DEFAULT_CSDS_URL
    sentinel_url: str | None = None
    api_version: str = DEFAULT_API_VERSION
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    read_timeout: float = Field(default=DEFAULT_READ_TIMEOUT, gt=0)
    ca_bundle: Path | None = None
    credentials: Credentials = Credentials()


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the preflight found; every run that returns one would work."""

    base_url: str
    write_url: str  # the host `apply` would write to
    sentinel_url: str | None
    credential: str
    token_expires_in: float | None
    token_expires_at: datetime | None
    users: int
    latency_ms: float
    setup_ms: float


async def run_check(settings: CheckSettings, *, out: TextIO = sys.stdout) -> CheckReport:
    """Resolve, authenticate and read, printing each finding as it comes; raise the first
    problem as UsageError (2), AuthRefused (3) or CheckFailed (1)."""
    transport = Transport(
        api_version=settings.api_version,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )

    def say(label: str, text: str) -> None:
        print(f"  {label:<12} {text}", file=out, flush=True)

    print(f"bulkusers check: account {settings.account}", file=out, flush=True)
    if settings.base_url is None:
        say("domain api", settings.csds_url)
    async with make_session(
        concurrency=2, transport=transport, ssl=ssl_context(settings.ca_bundle)
    ) as session:
        started = time.monotonic()
        connection = await connect(settings, session, read_only=True)
        write_url = connection.base_url
        if settings.base_url is None:
            write_url = await connection.domain.base_url(SERVICE_READ_WRITE)
        setup_ms = (time.monotonic() - started) * 1000
        _say_connection(say, connection, write_url, setup_ms)
        auth = connection.auth
        expires_in, expires_at = _token_expiry(auth)
        if isinstance(auth, OAuthClientCredentials):
            say("token", _describe_expiry(expires_in, expires_at))
        users, latency_ms = await _read_users(session, connection, settings, say)
    say("result", "OK: reading works, an apply run would start (writing is not tried)")
    return CheckReport(
        base_url=connection.base_url,
        write_url=write_url,
        sentinel_url=connection.sentinel_url,
        credential=auth.description,
        token_expires_in=expires_in,
        token_expires_at=expires_at,
        users=users,
        latency_ms=latency_ms,
        setup_ms=setup_ms,
    )


def _say_connection(say: Say, connection: Connection, write_url: str, setup_ms: float) -> None:
    """Print the hosts and the credential."""
    if connection.service is None:
        say("users host", f"{connection.base_url} (--base-url)")
    else:
        say("users host", f"{connection.base_url} ({connection.service}, for reading)")
        say("write host", f"{write_url} ({SERVICE_READ_WRITE}, what apply uses)")
    if connection.sentinel_url is not None:
        say("token host", connection.sentinel_url)
    say("credential", connection.auth.description)
    say("set-up", f"{setup_ms:.0f} ms ({connection.domain.lookups} Domain API lookups)")


def _token_expiry(auth: Authorizer) -> tuple[float | None, datetime | None]:
    if isinstance(auth, OAuthClientCredentials):
        return auth.expires_in(), auth.expires_at_utc()
    return None, None


def _describe_expiry(expires_in: float | None, expires_at: datetime | None) -> str:
    """`expires in 59 min 58 s (2026-01-01 12:00:00 UTC)`, or that nobody said when."""
    if expires_in is None or expires_at is None:
        return "obtained; no expiry given (renewed when the server refuses it)"
    seconds = max(0, math.floor(expires_in))
    minutes, secs = divmod(seconds, 60)
    span = f"{minutes} min {secs} s" if minutes else f"{expires_in:.1f} s"
    return f"obtained; expires in {span} ({expires_at:%Y-%m-%d %H:%M:%S} UTC), renewed before"


async def _read_users(
    session: aiohttp.ClientSession,
    connection: Connection,
    settings: CheckSettings,
    say: Say,
) -> tuple[int, float]:
    """GET the user list (ids only): the user count and the round trip in ms."""
    url = URL(
        connection.base_url.rstrip("/")
        + USERS_PATH.format(account=settings.account)
        + f"?v={settings.api_version}&select={USERS_SELECT}",
        encoded=True,
    )
    auth = connection.auth
    where = f"the Users API at {connection.base_url}"
    for renewal in (False, True):
        sent = await auth.header()
        headers = {"Authorization": sent} if sent is not None else {}
        started = time.monotonic()
        try:
            async with session.get(url, headers=headers) as resp:
                body, too_big = await read_capped(resp, MAX_LIST_BODY)
                status = resp.status
        except TimeoutError:
            raise CheckFailed(
                f"{where} did not answer within {settings.read_timeout:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise CheckFailed(f"{where} is unreachable ({describe_exception(exc)})") from None
        latency_ms = (time.monotonic() - started) * 1000
        if status == 401 and not renewal and await auth.renew(sent):
            continue
        break
    detail = server_message(status, body)
    if status == 401:
        raise AuthRefused(refused_message(auth, detail))
    if status == 403:
        raise AuthRefused(
            f"the server accepted {auth.description} but refuses it access to the users "
            f"({detail}); the app needs the scopes users.read and users.write"
        )
    if status == 404:
        raise LookupError_(f"{where} does not know account '{settings.account}' ({detail})")
    if status == 400:
        raise UsageError(f"{where} refused the request ({detail}); check --api-version")
    if not 200 <= status < 300:
        raise CheckFailed(f"{where} could not be read: {detail}")
    if too_big:
        raise CheckFailed(f"{where} answered a user list larger than {MAX_LIST_BODY} bytes")
    try:
        users = json.loads(body)
    except ValueError:
        raise CheckFailed(f"{where} answered HTTP {status} with a body that is not JSON") from None
    if not isinstance(users, list):
        raise CheckFailed(f"{where} answered HTTP {status} with JSON that is not a user list")
    say("users", f"{len(users)} readable (round trip {latency_ms:.0f} ms, HTTP {status})")
    return len(users), latency_ms


@click.command()
@connection_options
def check(**options: Any) -> None:
    """Check, read-only, that an apply run would work: resolve the hosts, obtain a token,
    read the user list. Never writes.

    Prints the hosts, the token's expiry, the number of users and the round-trip time.
    Exit status: 0 a run would work; 1 the Users API could not be read (reason shown);
    2 bad usage, or the Domain API could not resolve the account; 3 credentials refused.
    """
    from bulkusers import logs

    if not options.get("account"):
        _fail("--account is required (or set LP_ACCOUNT)", 2)
    try:
        settings = CheckSettings(credentials=Credentials.from_env(), **options)
    except UsageError as exc:
        _fail(str(exc), exc.exit_code)
    except pydantic.ValidationError as exc:
        _fail(validation_message(exc), 2)
    logs.configure(log_file=None)
    try:
        anyio.run(run_check, settings)
    except BulkUsersError as exc:
        _fail(str(exc), exc.exit_code)
    finally:
        logs.close()


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"bulkusers: check failed: {message}", err=True)
    sys.exit(code)
