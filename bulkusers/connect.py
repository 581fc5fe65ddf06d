"""Where the account lives and how to prove who we are: --base-url or the Domain API, and
the credential from the environment, all settled before the first user is touched."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog

from bulkusers.auth import Authorizer, NoAuth, OAuthClientCredentials, SentinelTokens, StaticBearer
from bulkusers.clock import Clock
from bulkusers.domain import (
    DEFAULT_SETUP_DELAYS,
    DEFAULT_SETUP_TIMEOUT,
    SERVICE_READ_ONLY,
    SERVICE_READ_WRITE,
    SERVICE_SENTINEL,
    DomainApi,
    origin,
)
from bulkusers.errors import UsageError
from bulkusers.settings import Credentials, is_loopback_url

log = structlog.get_logger("bulkusers.connect")


class ConnectSettings(Protocol):
    """The part of a command's settings that says where to connect and as whom."""

    @property
    def account(self) -> str: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def csds_url(self) -> str: ...
    @property
    def sentinel_url(self) -> str | None: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...
    @property
    def credentials(self) -> Credentials: ...


@dataclass(frozen=True, slots=True)
class Connection:
    """The run's account-config host and credential, and how they were found."""

    base_url: str
    auth: Authorizer
    service: str | None  # the Domain API service the host came from; None with --base-url
    sentinel_url: str | None  # where tokens come from (OAuth only)
    domain: DomainApi  # what was looked up (`lookups` is 0 when nothing was)


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """Verification always on: the system's CAs, or those in --ca-bundle (PEM)."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise UsageError(
            f"--ca-bundle {ca_bundle}: no usable PEM certificates ({reason})"
        ) from None


def setup_timeout(settings: ConnectSettings) -> float:
    """A bound for each set-up request: the transport's timeouts, capped."""
    return min(settings.connect_timeout + settings.read_timeout, DEFAULT_SETUP_TIMEOUT)


async def connect(
    settings: ConnectSettings,
    session: aiohttp.ClientSession,
    *,
    read_only: bool = False,
    clock: Clock | None = None,
    delays: tuple[float, ...] = DEFAULT_SETUP_DELAYS,
) -> Connection:
    """Resolve the hosts and obtain the first token, or raise before any user is touched:
    LookupError_/UsageError (exit 2) or AuthRefused (exit 3)."""
    creds = settings.credentials
    timeout = setup_timeout(settings)
    if not creds.present and not (settings.base_url and is_loopback_url(settings.base_url)):
        raise UsageError(
            "no credentials: set LP_CLIENT_ID and LP_CLIENT_SECRET (or LP_BEARER_TOKEN); "
            "running without credentials is allowed only against a loopback --base-url"
        )
    domain = DomainApi(  # asks nothing until a host is needed
        session,
        csds_url=_checked_url(settings.csds_url, "--csds-url"),
        account=settings.account,
        timeout=timeout,
        delays=delays,
        clock=clock,
    )

    service: str | None = None
    if settings.base_url is not None:
        base_url = _checked_url(settings.base_url, "--base-url")
    else:
        service = SERVICE_READ_ONLY if read_only else SERVICE_READ_WRITE
        base_url = await domain.base_url(service)

    if creds.present:
        _warn_if_cleartext(base_url, "the token")
    auth: Authorizer
    sentinel_url: str | None = None
    if creds.bearer_token is not None:
        auth = StaticBearer(creds.bearer_token)
    elif creds.client_id is not None and creds.client_secret is not None:
        if settings.sentinel_url is not None:
            sentinel_url = _checked_url(settings.sentinel_url, "--sentinel-url")
        else:
            sentinel_url = await domain.base_url(SERVICE_SENTINEL)
        _warn_if_cleartext(sentinel_url, "the client secret")
        tokens = SentinelTokens(
            session,
            sentinel_url=sentinel_url,
            account=settings.account,
            client_id=creds.client_id,
            client_secret=creds.client_secret,
            timeout=timeout,
            delays=delays,
            clock=clock,
        )
        oauth = OAuthClientCredentials(tokens, client_id=creds.client_id, clock=clock)
        await oauth.start()
        auth = oauth
    else:
        auth = NoAuth()
    log.info(
        "connected",
        base_url=base_url,
        service=service,
        sentinel_url=sentinel_url,
        credential=auth.description,
        lookups=domain.lookups,
    )
    return Connection(
        base_url=base_url, auth=auth, service=service, sentinel_url=sentinel_url, domain=domain
    )


def _warn_if_cleartext(url: str, what: str) -> None:
    """Plain http is for the simulator on loopback; elsewhere say that a secret travels in
    clear text (a warning, not a refusal: test rigs use http between containers)."""
    if url.lower().startswith("http://") and not is_loopback_url(url):
        log.warning(
            "cleartext_credentials",
            url=url,
            reason=f"{what} is sent over plain http; use https outside a test setup",
        )


def _checked_url(url: str, option: str) -> str:
    """An http(s) URL given on the command line, without a trailing slash."""
    try:
        origin(url)
    except UsageError:
        raise UsageError(f"{option} {url!r}: not an http(s) URL") from None
    return url.rstrip("/")


def refused_message(auth: Authorizer, detail: str | None) -> str:
    """Which credential the server refused and what it said, never the credential's value."""
    if isinstance(auth, NoAuth):
        head = (
            "the server requires credentials: set LP_CLIENT_ID and LP_CLIENT_SECRET "
            "(or LP_BEARER_TOKEN)"
        )
    else:
        head = f"the server refused {auth.description}"
    parts = [head]
    if detail:
        parts.append(detail)
    problem = getattr(auth, "problem", None)  # why the renewal failed, when it did
    if isinstance(problem, str) and problem:
        parts.append(f"renewal failed: {problem}")
    return "; ".join(parts)
