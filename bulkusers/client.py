"""The Users API over HTTP (aiohttp): one GET or PUT per call, every answer returned as a
value; only cancellation escapes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, Protocol

import aiohttp
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bulkusers.auth import Authorizer
from bulkusers.classify import retry_after_seconds
from bulkusers.domain import describe_exception

#: Bodies larger than this are not read (a misbehaving proxy must not exhaust memory).
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_API_VERSION = "4.0"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0

USERS_PATH = "/api/account/{account}/configuration/le-users/users"

#: PUT bodies: compact, UTF-8 as is; one encoder for the run (json.dumps with options builds
#: a new one per call). An entity parsed from JSON cannot be circular.
_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of the Users API, or the lack of one (status None)."""

    status: int | None  # None: timeout or dropped connection, nothing is known
    revision: str | None = None  # the ac-revision header
    entity: dict[str, Any] | None = None  # the parsed user, for a good GET
    body: bytes = b""  # kept for error messages
    retry_after: float | None = None
    problem: str | None = None  # why an answer is unusable (no answer, bad body, no revision)


class UsersApi(Protocol):
    """The two calls the engine makes; tests plug in fakes, the CLI the HTTP client."""

    async def get_user(self, user_id: int) -> Reply:
        """GET one user with every attribute (select=$all)."""
        ...

    async def put_user(self, user_id: int, entity: Mapping[str, Any], revision: str) -> Reply:
        """PUT the whole entity with If-Match: revision."""
        ...


@dataclass(frozen=True, slots=True)
class Transport:
    """How requests are sent: version, method override, timeouts, TLS, body cap."""

    api_version: str = DEFAULT_API_VERSION
    method_override: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_body: int = DEFAULT_MAX_BODY


def make_session(
    *, concurrency: int, transport: Transport, ssl: SSLContext | bool = True
) -> aiohttp.ClientSession:
    """A keep-alive session whose pool matches the number of requests in flight; `ssl` is
    True (system CAs) or the --ca-bundle context: verification is never off."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60, ssl=ssl
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=transport.connect_timeout, sock_read=transport.read_timeout
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        middlewares=(EnvProxy(),),  # HTTPS_PROXY / NO_PROXY, instead of trust_env
        json_serialize=json.dumps,
        skip_auto_headers=("User-Agent",),
        headers={"User-Agent": "bulkusers", "Accept": "application/json"},
    )
    _no_hidden_retries(session)
    return session


class EnvProxy:
    """The proxy the environment names for a host (HTTP(S)_PROXY, NO_PROXY, the proxy's
    ~/.netrc login), looked up once per scheme and host.

    aiohttp's `trust_env=True` does the same lookup for every request, on a worker thread,
    re-reading ~/.netrc each time: two thread round trips per request, a third of the
    client's CPU in the benchmark. The environment does not change during a run.
    """

    def __init__(self) -> None:
        self._by_host: dict[
            tuple[str, str | None], tuple[URL, aiohttp.BasicAuth | None] | None
        ] = {}

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if request.proxy is None:
            url = request.url
            key = (url.scheme, url.host)
            try:
                found = self._by_host[key]
            except KeyError:
                found = None
                with contextlib.suppress(LookupError):
                    found = get_env_proxy_for_url(url)
                self._by_host[key] = found
            if found is not None:
                request.update_proxy(found[0], found[1], None)
        return await handler(request)


def _no_hidden_retries(session: aiohttp.ClientSession) -> None:
    """aiohttp silently re-sends a PUT once when a kept-alive connection drops mid-request
    (aio-libs/aiohttp#10790: no public switch). A PUT whose answer was lost must be followed
    by a fresh GET, never re-sent, so turn that off; tests/test_client.py pins it."""
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("this aiohttp version changed its hidden retry; check the pin")
    session._retry_connection = False


class HttpUsersApi:
    """The Users API of one account on one account-config host."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        account: str,
        auth: Authorizer,
        transport: Transport = Transport(),
        wall_clock: Callable[[], float] = time.time,
        pace: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._session = session
        self._pace = pace
        self._auth = auth
        self._transport = transport
        root = base_url.rstrip("/") + USERS_PATH.format(account=account)
        # Everything but the user id is fixed for the run: build it once, not per request.
        self._user_url = root + "/"
        self._get_query = f"?v={transport.api_version}&select=%24all"
        self._put_query = f"?v={transport.api_version}"
        self._put_method = "POST" if transport.method_override else "PUT"
        self._put_headers = {"Content-Type": "application/json"}
        if transport.method_override:
            self._put_headers["X-HTTP-Method-Override"] = "PUT"
        self._epoch = wall_clock  # Retry-After may be an HTTP date

    async def get_user(self, user_id: int) -> Reply:
        url = URL(f"{self._user_url}{user_id}{self._get_query}", encoded=True)
        reply = await self._send("GET", url, None, {})
        if reply.status is None or not 200 <= reply.status < 300:
            return reply
        return _read_user(reply, user_id)

    async def put_user(self, user_id: int, entity: Mapping[str, Any], revision: str) -> Reply:
        body = _encode_json(entity).encode()
        headers = {**self._put_headers, "If-Match": revision}
        url = URL(f"{self._user_url}{user_id}{self._put_query}", encoded=True)
        return await self._send(self._put_method, url, body, headers)

    async def _send(
        self, method: str, url: URL, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        """Send once; on 401 renew the credential once and send again. `headers` is this
        request's own dict: the credential is added to it."""
        for renewal in (False, True):
            if renewal and self._pace is not None:
                await self._pace()  # the re-send counts against --rate like any request
            sent_auth = await self._auth.header()
            if sent_auth is not None:
                headers["Authorization"] = sent_auth
            reply = await self._exchange(method, url, body, headers)
            if reply.status != 401 or renewal or not await self._auth.renew(sent_auth):
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self, method: str, url: URL, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        try:
            # A redirect would re-send a PUT somewhere else: classify the 3xx instead.
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                raw, too_big = await read_capped(resp, self._transport.max_body)
                retry_after = None
                if resp.status == 429 or resp.status == 503:
                    retry_after = retry_after_seconds(
                        resp.headers.get("Retry-After"), now_epoch=self._epoch()
                    )
                problem = (
                    f"answer body larger than {self._transport.max_body} bytes" if too_big else None
                )
                return Reply(
                    status=resp.status,
                    revision=resp.headers.get("ac-revision") or resp.headers.get("ETag"),
                    body=raw,
                    retry_after=retry_after,
                    problem=problem,
                )
        except TimeoutError:
            return Reply(
                status=None, problem=f"no answer within {self._transport.read_timeout:g} s"
            )
        except (aiohttp.ClientError, OSError) as exc:
            return Reply(status=None, problem=f"connection failed ({describe_exception(exc)})")


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Read the body, but never more than `cap` bytes."""
    length = resp.content_length
    if length is not None and length > cap:
        return b"", True
    if length is not None:
        return await resp.read(), False
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > cap:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


def _read_user(reply: Reply, user_id: int) -> Reply:
    """Check a GET answer is a usable user entity with a revision."""
    if reply.problem is not None:
        return reply
    problem: str | None = None
    entity: Any = None
    try:
        entity = json.loads(reply.body)
    except ValueError:
        problem = "answer is not JSON"
    else:
        if not isinstance(entity, dict):
            problem = f"answer is JSON of the wrong shape ({type(entity).__name__}, not an object)"
        elif entity.get("id") is not None and str(entity.get("id")) != str(user_id):
            problem = f"answer is for user {entity.get('id')!s:.40}, not {user_id}"
    if problem is None and not reply.revision:
        problem = "answer has no ac-revision header; refusing to PUT without If-Match"
    if problem is not None:
        return Reply(status=reply.status, revision=reply.revision, body=reply.body, problem=problem)
    return Reply(status=reply.status, revision=reply.revision, entity=entity, body=b"")
