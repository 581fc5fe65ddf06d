"""A realistic fake of LivePerson's Users API v4.0, Domain API and sentinel: a real aiohttp app.

The end-to-end tests, `make demo` and the benchmarks run the real client against it on
loopback, so it keeps the API's rules (revisions, If-Match, full replace, masking) and adds
faults on demand: latency, a server-side rate limit, 5xx, dropped connections, lost PUT
answers, outages, and a background "other admin" who edits users concurrently.

Faults apply to Users-API requests only, in this order: a scripted answer for the user,
the outage window, a drop, the rate limit and random throttling (429), latency, a random
5xx, then normal handling (and, for an accepted PUT, a lost answer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import BaseModel, Field, SecretStr

from bulkusers import sim_rules
from bulkusers.sim_data import SeedUsers, assign_revisions, generate_users, load_seed_file
from bulkusers.sim_stats import SimStats

__all__ = [
    "FAULT_FIELDS",
    "SERVICES",
    "RunningSimulator",
    "ScriptedResponse",
    "SimConfig",
    "Simulator",
    "serve",
]

DEFAULT_ACCOUNT = "123"
DEFAULT_CLIENT_ID = "demo-client"
DEFAULT_CLIENT_SECRET = "demo-secret"  # a documented demo value, not a credential
ACCOUNT_PATTERN = r"^[a-zA-Z0-9_]{1,20}$"
API_VERSIONS: frozenset[str] = frozenset({"4.0", "5.0", "6.0"})

#: Domain API service names this server answers for (case-sensitive, like CSDS).
SERVICES: tuple[str, ...] = (
    "accountConfigReadWrite",
    "accountConfigReadOnly",
    "sentinel",
    "agentVep",
)

#: SimConfig fields that `set_faults` (and `POST /_sim/faults`) may change live.
FAULT_FIELDS: frozenset[str] = frozenset(
    {
        "latency_ms",
        "jitter_ms",
        "rate_limit",
        "retry_after",
        "throttle_fraction",
        "error_fraction",
        "drop_fraction",
        "lost_put_fraction",
        "other_admin_hz",
        "collection_revision",
        "require_auth",
        "token_ttl",
        "outage_after",
        "outage_seconds",
    }
)

USERS_PATH: Final = "/api/account/{account}/configuration/le-users/users"
DOMAIN_PATH: Final = "/api/account/{account}/service"
TOKEN_PATH: Final = "/sentinel/api/v2/account/{account}/app/token"

_ACCOUNT_RE = re.compile(ACCOUNT_PATTERN)
_MAX_USER_ID = 2**63 - 1
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class SimConfig(BaseModel, frozen=True, extra="forbid"):
    """Everything the simulator does differently from run to run; faults default to off."""

    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] = DEFAULT_ACCOUNT
    users: Annotated[int, Field(ge=0)] = 100  # generated when there is no seed_file
    seed: int = 0  # generated users, revisions and every random fault follow it
    seed_file: Path | None = None  # a JSON list of entities, or {"users": [...]}
    latency_ms: NonNegative = 0.0
    jitter_ms: NonNegative = 0.0  # uniform extra 0..jitter_ms
    rate_limit: NonNegative = 0.0  # Users-API requests per sliding second; 0 = unlimited
    retry_after: NonNegative = 1.0  # seconds sent in Retry-After with every 429
    throttle_fraction: Fraction = 0.0  # random 429s
    error_fraction: Fraction = 0.0  # random 500/502/503, a third with an HTML body
    drop_fraction: Fraction = 0.0  # connection closed unanswered, nothing applied
    lost_put_fraction: Fraction = 0.0  # accepted PUT applied, then closed unanswered
    other_admin_hz: NonNegative = 0.0  # concurrent description edits per second
    collection_revision: bool = False  # If-Match checked against the account revision
    token_ttl: Annotated[float, Field(gt=0.0)] = 3600.0  # seconds an issued token lives
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: SecretStr = SecretStr(DEFAULT_CLIENT_SECRET)
    bearer_tokens: tuple[str, ...] = ()  # static tokens always accepted
    require_auth: bool = False  # refuse Users-API requests without Authorization
    outage_after: NonNegative | None = None  # seconds after start; None = no outage
    outage_seconds: NonNegative = 0.0  # how long every Users-API request answers 503


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """A canned answer for one request of one user; `hang` never answers, `drop` hangs up."""

    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    hang: bool = False
    drop: bool = False


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator being served: where to reach it and the state behind it."""

    sim: Simulator
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. `http://127.0.0.1:8765`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(slots=True)
class _Call:
    """One Users-API request as the fault pipeline sees it."""

    method: str  # "GET" or "PUT" (a POST overridden to PUT is a PUT)
    user_id: int | None
    arrived: float


def seconds_text(seconds: float) -> str:
    """Seconds as a header value: integers as integers ("1"), fractions as written ("0.2")."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=_dumps(payload), content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(status, {"message": message, "status": status}, headers)


def _html_error(status: int) -> web.Response:
    """The kind of page a load balancer answers with: not JSON, which clients must survive."""
    title = f"{status} {_REASONS[status]}"
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return web.Response(status=status, text=page, content_type="text/html")


_REASONS: Final = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _parse_user_id(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if 0 < value <= _MAX_USER_ID else None


def _parse_revision(text: str) -> int | None:
    text = text.strip().removeprefix("W/").strip('"')
    try:
        return int(text)
    except ValueError:
        return None


class Simulator:
    """The state and rules of one fake account; `.app` serves them over HTTP."""

    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        seeded = self._seed_users(config)
        self.users: dict[int, dict[str, Any]] = seeded.users
        self.revisions: dict[int, int] = seeded.revisions
        self.revision: int = seeded.account_revision
        self.stats = SimStats()
        #: sha256 of each password set through passwordSh; the entity never holds it.
        self.passwords: dict[int, str] = {}
        self.password_changes: Counter[int] = Counter()
        #: The last description the other admin wrote, per user.
        self.other_admin_edits: dict[int, str] = {}
        #: host:port the Domain API hands out; set by `serve` once the port is bound.
        self.base_uri: str | None = None
        for user_id, user in self.users.items():
            password = user.pop("passwordSh", None)
            if isinstance(password, str) and password:
                self.passwords[user_id] = _password_hash(password)
        self._ids = sorted(self.users)
        self._login_names = {user.get("loginName"): uid for uid, user in self.users.items()}
        self._started = clock()
        self._outage = self._outage_window(config)
        self._faults_rng = random.Random(f"bulkusers-sim-faults:{config.seed}")
        self._admin_rng = random.Random(f"bulkusers-sim-admin:{config.seed}")
        self._token_rng = random.Random(f"bulkusers-sim-tokens:{config.seed}")
        self._signing_key = hashlib.sha256(f"bulkusers-sim-key:{config.seed}".encode()).digest()
        self._tokens: dict[str, float] = {}
        self._scripts: dict[tuple[int, str], deque[ScriptedResponse]] = {}
        self._admitted: deque[float] = deque()
        self._closing = asyncio.Event()
        self._faults_changed = asyncio.Event()
        self.app = self._build_app()

    @staticmethod
    def _seed_users(config: SimConfig) -> SeedUsers:
        if config.seed_file is not None:
            return load_seed_file(config.seed_file, config.seed)
        return assign_revisions(generate_users(config.users, config.seed), config.seed)

    def _build_app(self) -> web.Application:
        app = web.Application()
        one_user = USERS_PATH + "/{user_id}"
        app.router.add_get(one_user, self._get_user_route, allow_head=False)
        app.router.add_put(one_user, self._put_user_route)
        app.router.add_post(one_user, self._post_user_route)
        app.router.add_get(USERS_PATH, self._get_users_route, allow_head=False)
        app.router.add_get(DOMAIN_PATH + "/{service}/baseURI.json", self._lookup_service)
        app.router.add_get(DOMAIN_PATH + "/baseURI.json", self._lookup_all_services)
        app.router.add_post(TOKEN_PATH, self._issue_token_route)
        app.router.add_get("/_sim/stats", self._stats_route)
        app.router.add_get("/_sim/state", self._state_route)
        app.router.add_post("/_sim/faults", self._faults_route)
        return app

    # ------------------------------------------------------------------ public helpers

    def now(self) -> float:
        """The simulator's clock (wall-clock seconds unless a test injected another)."""
        return self._clock()

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-able data (user-id keys are strings, as JSON makes them)."""
        return {
            "account": self.config.account,
            "revision": self.revision,
            "users": [
                {**self.users[uid], "revision": self.revisions[uid]} for uid in sorted(self.users)
            ],
            "other_admin_edits": {str(uid): text for uid, text in self.other_admin_edits.items()},
            "password_changes": {str(uid): n for uid, n in sorted(self.password_changes.items())},
            "stats": self.stats.to_dict(),
        }

    def script(self, user_id: int, method: str, responses: list[ScriptedResponse]) -> None:
        """Queue canned answers for this user's next requests ("GET", "PUT" or "ANY")."""
        if method not in ("GET", "PUT", "ANY"):
            raise ValueError(f"method must be GET, PUT or ANY, not {method!r}")
        self._scripts.setdefault((user_id, method), deque()).extend(responses)

    def set_faults(self, **changes: Any) -> SimConfig:
        """Change fault settings live; `outage_seconds` without `outage_after` starts one now."""
        unknown = sorted(set(changes) - FAULT_FIELDS)
        if unknown:
            raise ValueError(f"not fault settings: {', '.join(unknown)}")
        if "outage_seconds" in changes and "outage_after" not in changes:
            changes["outage_after"] = max(0.0, self._clock() - self._started)
        self.config = SimConfig.model_validate({**self.config.model_dump(), **changes})
        self._outage = self._outage_window(self.config)
        self._faults_changed.set()
        return self.config

    def faults(self) -> dict[str, Any]:
        """The current fault settings, as `POST /_sim/faults` answers them."""
        return {name: getattr(self.config, name) for name in sorted(FAULT_FIELDS)}

    def password_matches(self, user_id: int, password: str) -> bool:
        """Whether `password` is what a PUT last set for the user (tests check what was sent)."""
        return self.passwords.get(user_id) == _password_hash(password)

    def issue_token(self, subject: str | None = None) -> str:
        """A JWT-shaped bearer token accepted until `token_ttl` seconds from now."""
        now = self._clock()
        ttl = self.config.token_ttl
        expires = now + ttl
        claims = {
            "iss": "bulkusers-simulator",
            "sub": subject or self.config.client_id,
            "aud": self.config.account,
            "scope": "users.read users.write",
            "iat": int(now),
            "exp": int(expires) if float(ttl).is_integer() else round(expires, 3),
            "jti": f"{len(self._tokens) + 1:06d}-{self._token_rng.getrandbits(64):016x}",
        }
        header = _b64url(_dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(_dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        signature = hmac.new(self._signing_key, signing_input, hashlib.sha256).digest()
        token = f"{header}.{payload}.{_b64url(signature)}"
        self._tokens[token] = expires
        return token

    def edit_as_other_admin(self, user_id: int | None = None) -> int:
        """One edit by the concurrent admin: a new description, bumping revisions like a PUT."""
        uid = user_id if user_id is not None else self._admin_rng.choice(self._ids)
        self.stats.other_admin_edits += 1
        text = f"edited by other admin #{self.stats.other_admin_edits}"
        entity = {**self.users[uid], "description": text, "dateUpdated": self._now_text()}
        self._store(uid, entity)
        self.other_admin_edits[uid] = text
        return uid

    async def run_other_admin(self) -> None:
        """Edit random users `other_admin_hz` times a second until cancelled (re-read live)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            hz = self.config.other_admin_hz
            if hz <= 0 or not self._ids:
                # Idle until set_faults may have switched it on: no wakeups while off.
                self._faults_changed.clear()
                await self._faults_changed.wait()
                next_at = loop.time()
                continue
            # Falling more than a second behind means a busy loop: skip rather than burst.
            next_at = max(next_at + 1.0 / hz, loop.time() - 1.0)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.config.other_admin_hz > 0:
                self.edit_as_other_admin()

    def release_hangs(self) -> None:
        """Let scripted hangs end (by hanging up) so the server can shut down promptly."""
        self._closing.set()

    # ------------------------------------------------------------------ state changes

    def _now_text(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d %H:%M:%S")

    def _store(self, user_id: int, entity: dict[str, Any], password: object = None) -> int:
        """Store an accepted change: one account-revision bump, which becomes the user's."""
        self.revision += 1
        old_login = self.users[user_id].get("loginName")
        if self._login_names.get(old_login) == user_id:
            del self._login_names[old_login]
        self._login_names[entity.get("loginName")] = user_id
        self.users[user_id] = entity
        self.revisions[user_id] = self.revision
        if isinstance(password, str):
            self.passwords[user_id] = _password_hash(password)
            self.password_changes[user_id] += 1
        return self.revision

    def _visible_revision(self, user_id: int) -> int:
        """What GET reports and PUT's If-Match must equal: per user, or the collection's."""
        return self.revision if self.config.collection_revision else self.revisions[user_id]

    def _outage_window(self, config: SimConfig) -> tuple[float, float] | None:
        if config.outage_after is None or config.outage_seconds <= 0:
            return None
        start = self._started + config.outage_after
        return start, start + config.outage_seconds

    # ------------------------------------------------------------------ the fault pipeline

    async def _users_api(
        self,
        request: web.Request,
        method: str,
        action: Callable[[web.Request, _Call], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """Run one Users-API request through the faults, in their documented order."""
        call = self._arrive(request, method)
        script = self._next_script(call) if self._scripts else None
        if script is not None:
            return await self._play(request, call, script)
        config = self.config
        if self._outage is not None and self._outage[0] <= call.arrived < self._outage[1]:
            return self._answer(call, _error(503, "Service Unavailable (simulated outage)"))
        if self._chance(config.drop_fraction):
            self.stats.drops += 1
            return _hang_up(request)
        throttled = self._throttle(call)
        if throttled is not None:
            return self._answer(call, throttled)
        if config.latency_ms or config.jitter_ms:
            jitter = config.jitter_ms * self._faults_rng.random() if config.jitter_ms else 0.0
            await asyncio.sleep((config.latency_ms + jitter) / 1000.0)
        if self._chance(config.error_fraction):
            return self._answer(call, self._random_error())
        response = self._refuse_auth(request) or await action(request, call)
        if method == "PUT" and response.status == 200 and self._chance(config.lost_put_fraction):
            self.stats.lost_puts += 1
            return _hang_up(request)
        return self._answer(call, response)

    def _arrive(self, request: web.Request, method: str) -> _Call:
        """Count the request as it arrives: method, version, override, auth scheme, time."""
        now = self._clock()
        stats = self.stats
        stats.requests += 1
        stats.arrivals.append(now)
        stats.by_method[request.method] += 1
        if method == "GET":
            stats.gets += 1
        else:
            stats.puts += 1
        stats.by_version[request.query.get("v", "(none)")] += 1
        override = request.headers.get("X-HTTP-Method-Override")
        if override is not None:
            stats.by_method_override[override] += 1
        authorization = request.headers.get("Authorization")
        stats.auth_schemes[authorization.split(" ", 1)[0] if authorization else "(none)"] += 1
        return _Call(method, _parse_user_id(request.match_info.get("user_id")), now)

    def _answer(self, call: _Call, response: web.Response) -> web.Response:
        self.stats.count_status(response.status, call.arrived)
        return response

    def _chance(self, fraction: float) -> bool:
        # No draw when the fault is off, so enabling one fault does not reshuffle the others.
        return fraction > 0 and self._faults_rng.random() < fraction

    def _next_script(self, call: _Call) -> ScriptedResponse | None:
        if call.user_id is None:
            return None
        for key in ((call.user_id, call.method), (call.user_id, "ANY")):
            queue = self._scripts.get(key)
            if queue:
                response = queue.popleft()
                if not queue:
                    del self._scripts[key]
                return response
        return None

    async def _play(
        self, request: web.Request, call: _Call, script: ScriptedResponse
    ) -> web.StreamResponse:
        if script.hang:
            self.stats.hangs += 1
            await self._closing.wait()
            return _hang_up(request)
        if script.drop:
            self.stats.drops += 1
            return _hang_up(request)
        response = web.Response(
            status=script.status,
            text=script.body,
            content_type=script.content_type,
            headers=dict(script.headers),
        )
        return self._answer(call, response)

    def _throttle(self, call: _Call) -> web.Response | None:
        """429 when random throttling strikes or the sliding-window rate limit is full.

        The window is one second (longer for rates below 1/s) and holds at most
        max(1, floor(rate * window)) admitted requests; refused ones do not take a slot.
        """
        config = self.config
        if self._chance(config.throttle_fraction):
            return self._too_many("Too Many Requests (simulated throttling)")
        rate = config.rate_limit
        if rate <= 0:
            return None
        window = max(1.0, 1.0 / rate)
        capacity = max(1, int(rate * window))
        admitted = self._admitted
        while admitted and admitted[0] <= call.arrived - window:
            admitted.popleft()
        if len(admitted) >= capacity:
            return self._too_many(f"Too Many Requests (limit {rate:g} per second)")
        admitted.append(call.arrived)
        return None

    def _too_many(self, message: str) -> web.Response:
        return _error(429, message, {"Retry-After": seconds_text(self.config.retry_after)})

    def _random_error(self) -> web.Response:
        status = self._faults_rng.choice((500, 502, 503))
        if self._faults_rng.random() < 1 / 3:
            return _html_error(status)
        return _error(status, f"{_REASONS[status]} (simulated)")

    def _refuse_auth(self, request: web.Request) -> web.Response | None:
        """401 unless the Authorization header is absent (and allowed) or a live Bearer token."""
        header = request.headers.get("Authorization")
        if header is None:
            if self.config.require_auth:
                return self._unauthorized("authentication required")
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return self._unauthorized(f"unsupported authorization scheme {scheme!r}")
        token = token.strip()
        if token in self.config.bearer_tokens:
            return None
        expires = self._tokens.get(token)
        if expires is None:
            return self._unauthorized("unknown bearer token")
        if self._clock() >= expires:
            return self._unauthorized("bearer token expired")
        return None

    @staticmethod
    def _unauthorized(message: str) -> web.Response:
        return _error(401, message, {"WWW-Authenticate": 'Bearer realm="bulkusers-simulator"'})

    # ------------------------------------------------------------------ Users API

    def _path_problem(self, request: web.Request, call: _Call | None = None) -> web.Response | None:
        """400/404 for a missing or unknown v, a bad or unknown account, a bad user id."""
        version = request.query.get("v")
        if version is None:
            return _error(400, "v is required (the API version, e.g. v=4.0)")
        if version not in API_VERSIONS:
            return _error(400, f"unsupported API version v={version}")
        account = request.match_info["account"]
        if not _ACCOUNT_RE.match(account):
            return _error(400, f"invalid account id {account!r}")
        if account != self.config.account:
            return _error(404, f"account {account} not found")
        if call is not None:
            if call.user_id is None:
                raw = request.match_info["user_id"]
                return _error(400, f"user id must be a positive long, not {raw!r}")
            if call.user_id not in self.users:
                return _error(404, f"user {call.user_id} not found")
        return None

    async def _get_user_route(self, request: web.Request) -> web.StreamResponse:
        return await self._users_api(request, "GET", self._get_user)

    async def _put_user_route(self, request: web.Request) -> web.StreamResponse:
        return await self._users_api(request, "PUT", self._put_user)

    async def _post_user_route(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-HTTP-Method-Override", "").upper() != "PUT":
            return _error(405, "POST on a user needs X-HTTP-Method-Override: PUT")
        return await self._users_api(request, "PUT", self._put_user)

    async def _get_users_route(self, request: web.Request) -> web.StreamResponse:
        return await self._users_api(request, "GET", self._get_users)

    async def _get_user(self, request: web.Request, call: _Call) -> web.Response:
        """One user, masked, with its revision; If-Match equal to it answers 304."""
        problem = self._path_problem(request, call)
        if problem is not None:
            return problem
        assert call.user_id is not None
        revision = str(self._visible_revision(call.user_id))
        if_match = request.headers.get("If-Match")
        if if_match is not None and _parse_revision(if_match) == int(revision):
            return web.Response(status=304, headers={"ac-revision": revision})
        names = sim_rules.parse_select(request.query.get("select"))
        shown = sim_rules.selected(sim_rules.masked(self.users[call.user_id]), names)
        return _json(200, shown, {"ac-revision": revision})

    async def _get_users(self, request: web.Request, call: _Call) -> web.Response:
        """Every user, masked, with the account revision."""
        problem = self._path_problem(request)
        if problem is not None:
            return problem
        names = sim_rules.parse_select(request.query.get("select"))
        shown = [sim_rules.selected(sim_rules.masked(self.users[uid]), names) for uid in self._ids]
        return _json(200, shown, {"ac-revision": str(self.revision)})

    async def _put_user(self, request: web.Request, call: _Call) -> web.Response:
        """Full replace under If-Match: 428 without it, 400 for a bad body, 409 when stale."""
        problem = self._path_problem(request, call)
        if problem is not None:
            return problem
        assert call.user_id is not None
        if_match = request.headers.get("If-Match")
        if if_match is None:
            return _error(428, "If-Match is required: send the ac-revision you read")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "the body is not valid JSON")
        # Nothing below awaits: the check and the write happen as one step.
        reason = sim_rules.body_problem(body, call.user_id)
        if reason is None:
            reason = self._login_clash(call.user_id, body.get("loginName"))
        if reason is not None:
            return _error(400, reason)
        if _parse_revision(if_match) != self._visible_revision(call.user_id):
            return _error(409, f"revision {if_match} is stale: the user was changed since")
        entity = sim_rules.replace_entity(self.users[call.user_id], body, now=self._now_text())
        revision = self._store(call.user_id, entity, body.get("passwordSh"))
        self.stats.puts_applied += 1
        return _json(200, sim_rules.masked(entity), {"ac-revision": str(revision)})

    def _login_clash(self, user_id: int, login_name: object) -> str | None:
        owner = self._login_names.get(login_name)
        if owner is not None and owner != user_id:
            return f"loginName {login_name!r} is already used by another user"
        return None

    # ------------------------------------------------------------------ Domain API, sentinel

    def _base_uri_for(self, request: web.Request) -> str:
        return self.base_uri or request.host

    async def _lookup_service(self, request: web.Request) -> web.Response:
        """CSDS: where a service of the account lives (always this server)."""
        account, service = request.match_info["account"], request.match_info["service"]
        self.stats.domain_lookups[service] += 1
        if account != self.config.account:
            return _error(404, f"account {account} not found")
        if service not in SERVICES:
            return _error(404, f"service {service} not found for account {account}")
        base = self._base_uri_for(request)
        return _json(200, {"service": service, "account": account, "baseURI": base})

    async def _lookup_all_services(self, request: web.Request) -> web.Response:
        """CSDS: every service of the account."""
        account = request.match_info["account"]
        self.stats.domain_lookups["(all)"] += 1
        if account != self.config.account:
            return _error(404, f"account {account} not found")
        base = self._base_uri_for(request)
        entries = [{"service": s, "account": account, "baseURI": base} for s in SERVICES]
        return _json(200, {"baseURIs": entries})

    async def _issue_token_route(self, request: web.Request) -> web.Response:
        """Sentinel: OAuth 2.0 client credentials -> a bearer token."""
        account = request.match_info["account"]
        form = await request.post()
        grant, client_id = form.get("grant_type"), form.get("client_id")
        secret = form.get("client_secret")
        if account != self.config.account:
            self.stats.tokens_refused += 1
            return _error(404, f"account {account} not found")
        if grant != "client_credentials":
            self.stats.tokens_refused += 1
            return _json(
                400, {"error": "unsupported_grant_type", "message": "use client_credentials"}
            )
        expected = self.config.client_secret.get_secret_value().encode()
        given = secret.encode() if isinstance(secret, str) else b""
        if client_id != self.config.client_id or not hmac.compare_digest(given, expected):
            self.stats.tokens_refused += 1
            return _json(
                401, {"error": "invalid_client", "message": "client authentication failed"}
            )
        self.stats.tokens_issued += 1
        token = self.issue_token(client_id)
        ttl = self.config.token_ttl
        expires_in = int(ttl) if float(ttl).is_integer() else ttl
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in})

    # ------------------------------------------------------------------ control endpoints

    async def _stats_route(self, request: web.Request) -> web.Response:
        return _json(200, self.stats.to_dict())

    async def _state_route(self, request: web.Request) -> web.Response:
        return _json(200, self.snapshot())

    async def _faults_route(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            self.set_faults(**changes)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return _error(400, str(exc))
        return _json(200, self.faults())


def _password_hash(password: str) -> str:
    return "sha256:" + hashlib.sha256(password.encode()).hexdigest()


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection without answering; aiohttp then fails quietly to send the reply."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


@asynccontextmanager
async def serve(
    config: SimConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve a new Simulator on host:port (0 = any free port) and the other admin, until exit."""
    sim = Simulator(config) if clock is None else Simulator(config, clock=clock)
    runner = web.AppRunner(sim.app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        if host not in ("0.0.0.0", "::", ""):
            sim.base_uri = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
        admin = asyncio.create_task(sim.run_other_admin(), name="bulkusers-sim-other-admin")
        try:
            yield RunningSimulator(sim, host, bound_port)
        finally:
            admin.cancel()
            await asyncio.wait([admin])
            sim.release_hangs()
    finally:
        await runner.cleanup()
