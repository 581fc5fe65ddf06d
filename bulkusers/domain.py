"""The Domain API ("CSDS"): which host serves a service for an account, asked once per run,
plus the bounded-retry JSON exchange that the lookup and the token endpoint share."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio

from bulkusers.classify import server_message
from bulkusers.clock import Clock, SystemClock
from bulkusers.errors import LookupError_

SERVICE_READ_WRITE = "accountConfigReadWrite"
SERVICE_READ_ONLY = "accountConfigReadOnly"
SERVICE_SENTINEL = "sentinel"

#: Seconds one set-up request (lookup, token) may take in all, whatever the read timeout.
DEFAULT_SETUP_TIMEOUT = 15.0
#: Pauses before the 2nd and 3rd attempt of a set-up request that got no usable answer.
DEFAULT_SETUP_DELAYS: tuple[float, ...] = (0.5, 1.0)
#: Set-up answers are a few hundred bytes; anything much larger is not read.
MAX_SETUP_BODY = 256 * 1024

_LOOKUP_PATH = "/api/account/{account}/service/{service}/baseURI.json?version=1.0"
# A bare host name or IP (IPv6 in brackets) with an optional port; nothing else may come back.
_BARE_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?$"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One set-up exchange's outcome: the status and parsed JSON, or why there was none."""

    status: int | None  # None: no answer (timeout, connection failed)
    data: Any = None  # the parsed JSON body, None when not JSON
    text: str = ""  # what the server said, one short line, for messages
    problem: str | None = None  # why no usable answer came
    attempts: int = 1


def _retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


async def exchange_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_SETUP_TIMEOUT,
    delays: tuple[float, ...] = DEFAULT_SETUP_DELAYS,
    clock: Clock | None = None,
) -> Answer:
    """Send one set-up request, retrying a missing answer, a 429 or a 5xx `len(delays)` times."""
    clock = clock or SystemClock()
    answer = Answer(status=None, problem="not sent")
    for attempt, delay in enumerate((*delays, None), start=1):
        answer = await _exchange_once(session, method, url, form=form, timeout=timeout)
        answer = Answer(answer.status, answer.data, answer.text, answer.problem, attempt)
        if not _retryable(answer.status) or delay is None:
            return answer
        await clock.sleep(delay)
    return answer  # pragma: no cover - the loop always returns


async def _exchange_once(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None,
    timeout: float,
) -> Answer:
    try:
        async with session.request(
            method,
            url,
            data=dict(form) if form is not None else None,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            raw = await resp.content.read(MAX_SETUP_BODY + 1)
            while len(raw) <= MAX_SETUP_BODY and not resp.content.at_eof():
                more = await resp.content.read(MAX_SETUP_BODY + 1 - len(raw))
                if not more:
                    break
                raw += more
            status = resp.status
    except TimeoutError:
        return Answer(status=None, problem=f"no answer within {timeout:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Answer(status=None, problem=f"connection failed ({describe_exception(exc)})")
    if len(raw) > MAX_SETUP_BODY:
        return Answer(status=status, problem=f"answer larger than {MAX_SETUP_BODY} bytes")
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    said = server_message(status, raw).partition(": ")[2]  # the server's words, one line
    return Answer(status=status, data=data, text=said[:160])


def describe_exception(exc: BaseException) -> str:
    """A short, secret-free description of a transport exception."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:120]}" if text else name


def origin(url: str) -> str:
    """`https://host:port` of a URL (path, query and credentials dropped)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LookupError_(f"{url!r} is not an http(s) URL")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class DomainApi:
    """Resolves the hosts of one account's services through the Domain API, once each."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        csds_url: str,
        account: str,
        timeout: float = DEFAULT_SETUP_TIMEOUT,
        delays: tuple[float, ...] = DEFAULT_SETUP_DELAYS,
        clock: Clock | None = None,
    ) -> None:
        self._session = session
        self._csds = origin(csds_url)
        self._scheme = urlsplit(self._csds).scheme
        self._account = account
        self._timeout = timeout
        self._delays = delays
        self._clock = clock or SystemClock()
        self._cache: dict[str, str] = {}
        self._lock = anyio.Lock()
        self.lookups = 0  # requests actually sent, for tests and `check`

    @property
    def csds_url(self) -> str:
        return self._csds

    async def base_url(self, service: str) -> str:
        """`scheme://host` serving `service` for the account; raises LookupError_ (exit 2)."""
        async with self._lock:
            if service not in self._cache:
                self._cache[service] = await self._lookup(service)
            return self._cache[service]

    async def _lookup(self, service: str) -> str:
        url = self._csds + _LOOKUP_PATH.format(
            account=quote(self._account, safe=""), service=quote(service, safe="")
        )
        answer = await exchange_json(
            self._session, "GET", url, timeout=self._timeout, delays=self._delays, clock=self._clock
        )
        self.lookups += answer.attempts
        where = f"the Domain API at {self._csds}"
        what = f"service '{service}' of account '{self._account}'"
        if answer.status is None:
            raise LookupError_(
                f"{where} is unreachable: {answer.problem} "
                f"(after {answer.attempts} attempts, looking up {what}); check --csds-url"
            )
        if answer.status == 404:
            raise LookupError_(
                f"{where} does not know {what} (HTTP 404{_excerpt(answer)}); "
                "check --account (service names are case-sensitive)"
            )
        if not 200 <= answer.status < 300:
            raise LookupError_(
                f"{where} could not look up {what}: HTTP {answer.status}{_excerpt(answer)}"
            )
        host = _base_uri(answer.data, service)
        if host is None:
            raise LookupError_(f"{where} answered without a host for {what}{_excerpt(answer)}")
        if not _BARE_HOST.match(host):
            raise LookupError_(f"{where} answered an unusable host {host[:80]!r} for {what}")
        return f"{self._scheme}://{host}"


def _base_uri(data: Any, service: str) -> str | None:
    """The host in a single-service or all-services answer, if there is one for `service`."""
    if isinstance(data, dict) and isinstance(data.get("baseURIs"), list):
        for item in data["baseURIs"]:
            if isinstance(item, dict) and item.get("service") == service:
                return _base_uri(item, service)
        return None
    if isinstance(data, dict):
        value = data.get("baseURI")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _excerpt(answer: Answer) -> str:
    """`: <what the server said>`, short, or nothing."""
    return f": {answer.text[:100]}" if answer.text else ""
