"""Credentials for the Authorization header: none (the simulator), a static bearer token, or
OAuth 2.0 client credentials renewed before they expire."""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import structlog
from pydantic import SecretStr

from bulkusers.clock import Clock, SystemClock
from bulkusers.domain import DEFAULT_SETUP_DELAYS, DEFAULT_SETUP_TIMEOUT, exchange_json
from bulkusers.errors import AuthRefused, UsageError

log = structlog.get_logger("bulkusers.auth")

#: Renew this long before expiry at most ...
DEFAULT_RENEW_MARGIN = 60.0
#: ... and at most this fraction of the token's lifetime before it (short-lived tokens).
RENEW_FRACTION = 0.1
#: After a failed renewal, keep the still-valid token and try again this much later.
RENEW_RETRY_AFTER = 10.0

_TOKEN_PATH = "/sentinel/api/v2/account/{account}/app/token"


class Authorizer(Protocol):
    """What the Users API client needs of a credential."""

    @property
    def description(self) -> str:
        """Names the credential in messages, never its value (e.g. 'LP_BEARER_TOKEN')."""
        ...

    async def header(self) -> str | None:
        """The Authorization header value to send now (None: send none)."""
        ...

    async def renew(self, rejected: str | None) -> bool:
        """The server refused `rejected`: renew once if the scheme allows; True if renewed."""
        ...


class NoAuth:
    """No credentials: allowed only against a loopback --base-url (the simulator)."""

    description = "no credentials"

    async def header(self) -> str | None:
        return None

    async def renew(self, rejected: str | None) -> bool:
        return False


class StaticBearer:
    """A bearer token obtained elsewhere (LP_BEARER_TOKEN); it cannot be renewed."""

    description = "the bearer token in LP_BEARER_TOKEN"

    def __init__(self, token: SecretStr) -> None:
        self._header = SecretStr(f"Bearer {token.get_secret_value()}")

    async def header(self) -> str | None:
        return self._header.get_secret_value()

    async def renew(self, rejected: str | None) -> bool:
        return False

    def __repr__(self) -> str:
        return "StaticBearer(token=SecretStr('**********'))"


# -- OAuth 2.0 client credentials ------------------------------------------------------------


class TokenRefused(AuthRefused):
    """The token endpoint refused the client credentials (exit 3)."""


class TokenUnavailable(UsageError):
    """No token could be obtained: the endpoint is unreachable or answers nonsense (exit 2)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A token as the endpoint issued it."""

    access_token: SecretStr
    expires_in: float | None = None  # seconds, from the answer's `expires_in`


class TokenSource(Protocol):
    """Where tokens come from: sentinel over HTTP, or a fake in tests."""

    async def fetch(self) -> Grant:
        """A new token; raises TokenRefused or TokenUnavailable."""
        ...


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim (epoch seconds) of a JWT, read without checking the signature: we only
    need to know when to renew, the server is the one that verifies."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    exp = float(exp)
    return exp if math.isfinite(exp) and exp > 0 else None


def token_lifetime(grant: Grant, *, now_epoch: float) -> float | None:
    """Seconds the token is good for from now: JWT `exp`, else `expires_in`; when both are
    known the sooner wins (an integer `exp` or a skewed local clock can overstate it).
    None when unknown or not positive: then only a 401 renews it."""
    candidates: list[float] = []
    exp = jwt_expiry(grant.access_token.get_secret_value())
    if exp is not None and exp - now_epoch > 0:
        candidates.append(exp - now_epoch)
    if grant.expires_in is not None and grant.expires_in > 0:
        candidates.append(grant.expires_in)
    return min(candidates) if candidates else None


def renew_margin(lifetime: float) -> float:
    """How long before expiry to renew: 60 s or 10% of the lifetime, whichever is smaller."""
    return min(DEFAULT_RENEW_MARGIN, RENEW_FRACTION * lifetime)


class SentinelTokens:
    """Client-credentials tokens from sentinel's app token endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        sentinel_url: str,
        account: str,
        client_id: str,
        client_secret: SecretStr,
        timeout: float = DEFAULT_SETUP_TIMEOUT,
        delays: tuple[float, ...] = DEFAULT_SETUP_DELAYS,
        clock: Clock | None = None,
    ) -> None:
        self._session = session
        self._url = sentinel_url.rstrip("/") + _TOKEN_PATH.format(account=quote(account, safe=""))
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._delays = delays
        self._clock = clock or SystemClock()
        self.requests = 0  # token requests actually sent

    @property
    def url(self) -> str:
        return self._url

    async def fetch(self) -> Grant:
        """POST the client credentials; a 400/401/403 is a refusal, anything else unusable."""
        answer = await exchange_json(
            self._session,
            "POST",
            self._url,
            form={
                "client_id": self._client_id,
                "client_secret": self._secret.get_secret_value(),
                "grant_type": "client_credentials",
            },
            timeout=self._timeout,
            delays=self._delays,
            clock=self._clock,
        )
        self.requests += answer.attempts
        who = f"client id '{self._client_id}' (LP_CLIENT_ID/LP_CLIENT_SECRET)"
        said = self._scrub(_oauth_error(answer.data) or answer.text)
        said = f": {said}" if said else ""
        if answer.status is None:
            raise TokenUnavailable(
                f"the token endpoint {self._url} is unreachable: {answer.problem} "
                f"(after {answer.attempts} attempts)"
            )
        if answer.status in (400, 401, 403):
            raise TokenRefused(
                f"the token endpoint at {_origin(self._url)} refused {who} "
                f"(HTTP {answer.status}{said}); "
                "check LP_CLIENT_ID, LP_CLIENT_SECRET and --account"
            )
        if not 200 <= answer.status < 300:
            raise TokenUnavailable(
                f"the token endpoint {self._url} answered HTTP {answer.status}{said}"
            )
        data: Any = answer.data
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise TokenUnavailable(f"the token endpoint {self._url} answered without a token")
        kind = data.get("token_type", "Bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise TokenUnavailable(
                f"the token endpoint {self._url} issued a {str(kind)[:20]!r} token, not Bearer"
            )
        expires_in = data.get("expires_in")
        if isinstance(expires_in, str):
            try:
                expires_in = float(expires_in)
            except ValueError:
                expires_in = None
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = None
        return Grant(SecretStr(token.strip()), float(expires_in) if expires_in else None)

    def _scrub(self, text: str) -> str:
        """A server message without our secret in it, should a server echo the request."""
        secret = self._secret.get_secret_value()
        return text.replace(secret, "**********") if secret else text

    def __repr__(self) -> str:
        return f"SentinelTokens(url={self._url!r}, client_id={self._client_id!r})"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _oauth_error(data: Any) -> str:
    """`invalid_client: bad secret` from an RFC 6749 error answer, or ''."""
    if not isinstance(data, dict):
        return ""
    parts = [str(data[k])[:100] for k in ("error", "error_description") if data.get(k)]
    return ": ".join(parts)


@dataclass(frozen=True, slots=True)
class _Token:
    header: SecretStr
    renew_at: float  # monotonic; inf when the lifetime is unknown
    expires_at: float  # monotonic; inf when unknown
    expires_epoch: float | None  # wall clock, for people


class OAuthClientCredentials:
    """OAuth 2.0 client credentials: one token shared by every worker, renewed shortly before
    it expires and once on a 401 - by one worker only, the others wait for its result."""

    def __init__(
        self,
        source: TokenSource,
        *,
        client_id: str,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._client_id = client_id
        self._clock = clock or SystemClock()
        self._epoch = wall_clock
        self._token: _Token | None = None
        self._lock = anyio.Lock()
        self.fetches = 0  # tokens obtained
        self.problem: str | None = None  # why the last renewal failed, for the stop message

    @property
    def description(self) -> str:
        return f"the OAuth token for client id '{self._client_id}' (LP_CLIENT_ID/LP_CLIENT_SECRET)"

    async def start(self) -> None:
        """Obtain the first token now, so refused credentials stop the run before any row."""
        await self.header()

    async def header(self) -> str | None:
        token = self._token
        now = self._clock.now()
        if token is None or now >= token.renew_at:
            if token is not None and self._lock.locked() and now < token.expires_at:
                return token.header.get_secret_value()  # a renewal is under way; still good
            token = await self._refresh(token)
        return token.header.get_secret_value()

    async def renew(self, rejected: str | None) -> bool:
        async with self._lock:
            current = self._token
            if current is not None and current.header.get_secret_value() != rejected:
                return True  # another worker renewed it while this one waited
            try:
                self._token = await self._fetch()
            except (TokenRefused, TokenUnavailable) as exc:
                self.problem = str(exc)
                log.warning("token_renewal_failed", reason=self.problem)
                return False
            log.info("token_renewed", reason="refused", expires_in=self.expires_in())
            return True

    async def _refresh(self, stale: _Token | None) -> _Token:
        """Replace `stale` unless another worker already did; keep a still-valid token when
        the endpoint fails (a 401 later settles it)."""
        async with self._lock:
            current = self._token
            if current is not stale and current is not None:
                return current
            try:
                self._token = await self._fetch()
            except (TokenRefused, TokenUnavailable) as exc:
                if current is None:
                    raise
                self.problem = str(exc)
                log.warning("token_renewal_failed", reason=self.problem)
                retry_at = min(self._clock.now() + RENEW_RETRY_AFTER, current.expires_at)
                self._token = replace(current, renew_at=retry_at)
                return current
            if current is not None:
                log.info("token_renewed", reason="expiring", expires_in=self.expires_in())
            return self._token

    async def _fetch(self) -> _Token:
        grant = await self._source.fetch()
        self.fetches += 1
        now = self._clock.now()
        lifetime = token_lifetime(grant, now_epoch=self._epoch())
        if lifetime is None:
            renew_at = expires_at = math.inf
            epoch = None
        else:
            expires_at = now + lifetime
            renew_at = expires_at - renew_margin(lifetime)
            epoch = self._epoch() + lifetime
        return _Token(
            header=SecretStr(f"Bearer {grant.access_token.get_secret_value()}"),
            renew_at=renew_at,
            expires_at=expires_at,
            expires_epoch=epoch,
        )

    def expires_in(self) -> float | None:
        """Seconds until the current token expires (None: no token, or no known expiry)."""
        token = self._token
        if token is None or math.isinf(token.expires_at):
            return None
        return token.expires_at - self._clock.now()

    def expires_at_utc(self) -> datetime | None:
        """When the current token expires, in UTC (None when unknown)."""
        token = self._token
        if token is None or token.expires_epoch is None:
            return None
        return datetime.fromtimestamp(token.expires_epoch, tz=UTC)

    def __repr__(self) -> str:
        return (
            f"OAuthClientCredentials(client_id={self._client_id!r}, "
            f"token={'**********' if self._token else None})"
        )
