"""One frozen settings object per run, built by the CLI from options and environment."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bulkusers.client import (
    DEFAULT_API_VERSION,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
)
from bulkusers.engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_OUTAGE,
    DEFAULT_RETRY_DELAYS,
)
from bulkusers.errors import UsageError
from bulkusers.ratelimit import DEFAULT_MIN_RATE

DEFAULT_RATE = 10.0
DEFAULT_CSDS_URL = "https://api.liveperson.net"
#: How long in-flight rows may finish after Ctrl-C before they are cut off.
DEFAULT_GRACE = 15.0
ACCOUNT_PATTERN = r"^[a-zA-Z0-9_]{1,20}$"


class Credentials(BaseModel):
    """What the environment holds for authorization; values are secret from the start."""

    model_config = ConfigDict(frozen=True)

    client_id: str | None = None
    client_secret: SecretStr | None = None
    bearer_token: SecretStr | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        client_id = env.get("LP_CLIENT_ID") or None
        secret = env.get("LP_CLIENT_SECRET") or None
        bearer = env.get("LP_BEARER_TOKEN") or None
        if bearer and (client_id or secret):
            raise UsageError(
                "both LP_BEARER_TOKEN and LP_CLIENT_ID/LP_CLIENT_SECRET are set: keep one"
            )
        if bool(client_id) != bool(secret):
            missing = "LP_CLIENT_SECRET" if client_id else "LP_CLIENT_ID"
            raise UsageError(f"{missing} is not set (OAuth client credentials need both)")
        return cls(
            client_id=client_id,
            client_secret=SecretStr(secret) if secret else None,
            bearer_token=SecretStr(bearer) if bearer else None,
        )

    @property
    def present(self) -> bool:
        return self.bearer_token is not None or self.client_id is not None


class ApplySettings(BaseModel):
    """Everything one `apply` run needs."""

    model_config = ConfigDict(frozen=True)

    changes: Path
    results: Path
    account: str = Field(pattern=ACCOUNT_PATTERN)
    base_url: str | None = None
    csds_url: str = DEFAULT_CSDS_URL
    sentinel_url: str | None = None
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=512)
    rate: float = Field(DEFAULT_RATE, ge=0)
    min_rate: float = Field(DEFAULT_MIN_RATE, gt=0)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=100)
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    dry_run: bool = False
    resume: bool = False
    log_file: Path | None = None
    progress: bool = False
    api_version: str = DEFAULT_API_VERSION
    method_override: bool = False
    connect_timeout: float = Field(DEFAULT_CONNECT_TIMEOUT, gt=0)
    read_timeout: float = Field(DEFAULT_READ_TIMEOUT, gt=0)
    ca_bundle: Path | None = None
    grace: float = Field(DEFAULT_GRACE, ge=0)
    max_outage: float = Field(DEFAULT_MAX_OUTAGE, ge=0)
    credentials: Credentials = Credentials()


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on 127.0.0.0/8, ::1 or localhost."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_delays(text: str) -> tuple[float, ...]:
    """`5,10,15` -> (5.0, 10.0, 15.0); an empty string means no retries."""
    text = text.strip()
    if not text:
        return ()
    delays: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise UsageError(
                f"--retry-delays: {part.strip()!r} is not a number of seconds"
            ) from None
        if not value >= 0 or value > 3600:
            raise UsageError(f"--retry-delays: {part.strip()!r} must be between 0 and 3600 seconds")
        delays.append(value)
    if len(delays) > 50:
        raise UsageError("--retry-delays: at most 50 retries")
    return tuple(delays)
