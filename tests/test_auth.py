"""OAuth client credentials: JWT expiry, renewal timing, single-flight renewal under many
workers, refusals, and secrets kept out of reprs and messages."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from pydantic import SecretStr

from bulkusers.auth import (
    RENEW_RETRY_AFTER,
    Grant,
    OAuthClientCredentials,
    SentinelTokens,
    StaticBearer,
    TokenRefused,
    TokenUnavailable,
    jwt_expiry,
    renew_margin,
    token_lifetime,
)
from bulkusers.clock import FakeClock
from bulkusers.simulator import RunningSimulator, SimConfig, serve

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0
SECRET = "s3cr3t-XYZZY-auth-test"


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token (the signature is never checked client-side)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeTokens:
    """A token endpoint that takes a few scheduler turns to answer, so callers pile up."""

    def __init__(self, *, expires_in: float | None = 100.0) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.refuse = False
        self.unavailable = False

    async def fetch(self) -> Grant:
        self.calls += 1
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        if self.refuse:
            raise TokenRefused("the token endpoint refused client id 'app' (HTTP 401)")
        if self.unavailable:
            raise TokenUnavailable("the token endpoint is unreachable")
        return Grant(SecretStr(f"tok-{self.calls}"), self.expires_in)


def oauth(tokens: FakeTokens, clock: FakeClock) -> OAuthClientCredentials:
    return OAuthClientCredentials(tokens, client_id="app", clock=clock, wall_clock=lambda: EPOCH)


# -- expiry parsing ----------------------------------------------------------------------------


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    """The `exp` claim is read from the payload; the signature is not checked."""
    assert jwt_expiry(jwt({"exp": 1_800_000_123, "sub": "x"})) == 1_800_000_123.0
    assert jwt_expiry(jwt({"exp": 1_800_000_000.25})) == 1_800_000_000.25


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"not json").decode() + ".c",
        jwt({"sub": "no exp"}),
        jwt({"exp": "1800000000"}),
        jwt({"exp": True}),
        jwt({"exp": -5}),
        "a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c",
    ],
)
def test_malformed_jwt_has_no_expiry(token: str) -> None:
    """Anything that is not a JWT with a numeric exp gives None, never an exception."""
    assert jwt_expiry(token) is None


def test_lifetime_falls_back_to_expires_in_for_a_malformed_token() -> None:
    """An opaque or broken token uses the answer's expires_in."""
    assert token_lifetime(Grant(SecretStr("opaque"), 300.0), now_epoch=EPOCH) == 300.0
    assert token_lifetime(Grant(SecretStr("a.!!!.c"), 42.0), now_epoch=EPOCH) == 42.0


def test_lifetime_prefers_exp_and_takes_the_sooner_of_both() -> None:
    """exp decides; when expires_in is sooner (integer exp, skewed clock) that wins."""
    token = SecretStr(jwt({"exp": EPOCH + 600}))
    assert token_lifetime(Grant(token), now_epoch=EPOCH) == 600.0
    assert token_lifetime(Grant(token, 3600.0), now_epoch=EPOCH) == 600.0
    assert token_lifetime(Grant(token, 120.0), now_epoch=EPOCH) == 120.0


def test_lifetime_unknown_or_past_is_none() -> None:
    """An exp already past and no expires_in: unknown, so only a 401 renews."""
    past = SecretStr(jwt({"exp": EPOCH - 10}))
    assert token_lifetime(Grant(past), now_epoch=EPOCH) is None
    assert token_lifetime(Grant(past, 30.0), now_epoch=EPOCH) == 30.0
    assert token_lifetime(Grant(SecretStr("opaque"), 0.0), now_epoch=EPOCH) is None


def test_renew_margin_is_60s_or_a_tenth_of_the_lifetime() -> None:
    """Long-lived tokens renew a minute early, short ones a tenth of their life early."""
    assert renew_margin(3600.0) == 60.0
    assert renew_margin(300.0) == 30.0
    assert renew_margin(0.5) == pytest.approx(0.05)


# -- renewal -----------------------------------------------------------------------------------


async def test_token_is_cached_until_the_renewal_margin() -> None:
    """The same token serves every request until 10% of its lifetime is left."""
    tokens, clock = FakeTokens(expires_in=100.0), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    assert await auth.header() == "Bearer tok-1"
    clock.advance(89.9)
    assert await auth.header() == "Bearer tok-1"
    assert tokens.calls == 1
    clock.advance(0.2)  # 90.1 s: inside the 10 s margin
    assert await auth.header() == "Bearer tok-2"
    assert tokens.calls == 2
    assert auth.expires_in() == pytest.approx(100.0)


async def headers_from_workers(auth: OAuthClientCredentials, workers: int) -> list[str | None]:
    """The Authorization header each of `workers` concurrent tasks gets."""
    seen: list[str | None] = []

    async def worker() -> None:
        seen.append(await auth.header())

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return seen


async def test_expired_token_is_renewed_once_for_many_concurrent_workers() -> None:
    """Fifty workers that find the token expired cause exactly one token request."""
    tokens, clock = FakeTokens(), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    clock.advance(150.0)
    seen = await headers_from_workers(auth, 50)
    assert tokens.calls == 2
    assert seen == ["Bearer tok-2"] * 50


async def test_workers_keep_the_valid_token_while_one_renews_it() -> None:
    """Inside the margin the token still works: only one worker waits for the renewal."""
    tokens, clock = FakeTokens(), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    clock.advance(95.0)
    seen = await headers_from_workers(auth, 20)
    assert tokens.calls == 2
    assert set(seen) <= {"Bearer tok-1", "Bearer tok-2"}
    assert seen.count("Bearer tok-2") >= 1
    assert await auth.header() == "Bearer tok-2"


async def test_401_renewal_is_single_flight() -> None:
    """Many workers refused the same token: one renewal; all of them retry with the new one."""
    tokens, clock = FakeTokens(), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    refused = await auth.header()
    answers: list[bool] = []

    async def worker() -> None:
        answers.append(await auth.renew(refused))

    async with anyio.create_task_group() as tg:
        for _ in range(64):
            tg.start_soon(worker)
    assert tokens.calls == 2
    assert answers == [True] * 64
    assert await auth.header() == "Bearer tok-2"


async def test_each_refusal_of_the_current_token_renews_it() -> None:
    """Every 401 of the token in use renews it (the engine, not the authorizer, decides that
    a 401 surviving the renewal ends the run); a refusal of an older token renews nothing."""
    tokens, clock = FakeTokens(), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    assert await auth.renew("Bearer tok-1") is True
    assert await auth.renew("Bearer tok-2") is True
    assert await auth.renew("Bearer tok-1") is True
    assert tokens.calls == 3
    assert await auth.header() == "Bearer tok-3"


async def test_renewal_refused_by_the_endpoint_returns_false_with_the_reason() -> None:
    """A token endpoint that now refuses the secret: renew is False and says why."""
    tokens, clock = FakeTokens(), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    tokens.refuse = True
    assert await auth.renew("Bearer tok-1") is False
    assert auth.problem is not None
    assert "refused client id 'app'" in auth.problem


async def test_failed_proactive_renewal_keeps_the_valid_token_and_retries_later() -> None:
    """The endpoint being down inside the margin does not stop the run: the old token is
    used and the renewal is tried again after RENEW_RETRY_AFTER, not on every request."""
    tokens, clock = FakeTokens(expires_in=1000.0), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    tokens.unavailable = True
    clock.advance(945.0)  # margin 60 s: renewal due, 55 s left
    assert await auth.header() == "Bearer tok-1"
    assert await auth.header() == "Bearer tok-1"
    assert tokens.calls == 2
    tokens.unavailable = False
    clock.advance(RENEW_RETRY_AFTER)
    assert await auth.header() == "Bearer tok-3"
    assert tokens.calls == 3


async def test_first_token_refused_raises_at_start() -> None:
    """Refused credentials surface before any user request, as AuthRefused (exit 3)."""
    tokens, clock = FakeTokens(), FakeClock()
    tokens.refuse = True
    auth = oauth(tokens, clock)
    with pytest.raises(TokenRefused) as info:
        await auth.start()
    assert info.value.exit_code == 3
    assert tokens.calls == 1


async def test_unknown_lifetime_renews_only_on_401() -> None:
    """No exp and no expires_in: the token is kept until the server refuses it."""
    tokens, clock = FakeTokens(expires_in=None), FakeClock()
    auth = oauth(tokens, clock)
    await auth.start()
    clock.advance(10 * 86400)
    assert await auth.header() == "Bearer tok-1"
    assert auth.expires_in() is None
    assert auth.expires_at_utc() is None
    assert await auth.renew("Bearer tok-1") is True
    assert tokens.calls == 2


def test_reprs_hide_secrets() -> None:
    """Neither the authorizers nor the token source show a token or the secret."""
    bearer = StaticBearer(SecretStr("bearer-XYZZY-value"))
    assert "XYZZY" not in repr(bearer)
    assert "XYZZY" not in str(bearer)
    grant = Grant(SecretStr("tok-XYZZY"), 10.0)
    assert "XYZZY" not in repr(grant)


# -- against the simulator's sentinel -----------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with serve(
        SimConfig(users=3, client_id="app", client_secret=SecretStr(SECRET), token_ttl=600)
    ) as running:
        yield running


async def test_sentinel_issues_a_token_with_its_expiry(sim: RunningSimulator) -> None:
    """A good secret: a Bearer JWT whose exp gives the lifetime."""
    async with aiohttp.ClientSession() as session:
        source = SentinelTokens(
            session,
            sentinel_url=sim.url,
            account="123",
            client_id="app",
            client_secret=SecretStr(SECRET),
        )
        auth = OAuthClientCredentials(source, client_id="app")
        await auth.start()
        header = await auth.header()
    assert header is not None
    assert header.startswith("Bearer ey")
    expires_in = auth.expires_in()
    assert expires_in is not None
    assert 590 < expires_in <= 600
    assert sim.sim.stats.tokens_issued == 1
    assert SECRET not in repr(source)
    assert "**********" in repr(auth)
    assert header.split()[1] not in repr(auth)


async def test_sentinel_refusing_the_secret_names_the_client_not_the_secret(
    sim: RunningSimulator,
) -> None:
    """A wrong secret: TokenRefused naming the client id and variables; one request."""
    wrong = "s3cr3t-XYZZY-wrong"
    async with aiohttp.ClientSession() as session:
        source = SentinelTokens(
            session,
            sentinel_url=sim.url,
            account="123",
            client_id="app",
            client_secret=SecretStr(wrong),
        )
        with pytest.raises(TokenRefused) as info:
            await source.fetch()
    message = str(info.value)
    assert "client id 'app'" in message
    assert "LP_CLIENT_ID/LP_CLIENT_SECRET" in message
    assert "HTTP 401" in message
    assert wrong not in message
    assert source.requests == 1
    assert sim.sim.stats.tokens_refused == 1


async def test_unreachable_sentinel_is_retried_a_bounded_number_of_times() -> None:
    """No answer: three attempts with pauses on the injected clock, then TokenUnavailable."""
    clock = FakeClock()
    async with serve(SimConfig(users=0)) as gone:
        url = gone.url
    async with aiohttp.ClientSession() as session:
        source = SentinelTokens(
            session,
            sentinel_url=url,
            account="123",
            client_id="app",
            client_secret=SecretStr(SECRET),
            clock=clock,
        )
        with pytest.raises(TokenUnavailable) as info:
            await source.fetch()
    assert "unreachable" in str(info.value)
    assert info.value.exit_code == 2
    assert source.requests == 3
    assert clock.slept == [0.5, 1.0]
