"""Where the account lives and how to prove who we are: --base-url or the Domain API, and
the credential from the environment."""

from __future__ import annotations

import aiohttp

from bulkusers.auth import Authorizer, NoAuth, StaticBearer
from bulkusers.errors import UsageError
from bulkusers.settings import ApplySettings, is_loopback_url


async def connect(
    settings: ApplySettings, session: aiohttp.ClientSession
) -> tuple[str, Authorizer]:
    """The account-config base URL and the authorizer for this run."""
    creds = settings.credentials
    if settings.base_url is None:
        raise UsageError("--base-url is required (the Domain API lookup is not available yet)")
    base_url = settings.base_url
    if creds.bearer_token is not None:
        return base_url, StaticBearer(creds.bearer_token)
    if creds.client_id is not None:
        raise UsageError("OAuth client credentials are not supported yet; use LP_BEARER_TOKEN")
    if not is_loopback_url(base_url):
        raise UsageError(
            "no credentials: set LP_CLIENT_ID and LP_CLIENT_SECRET (or LP_BEARER_TOKEN); "
            "running without credentials is allowed only against a loopback --base-url"
        )
    return base_url, NoAuth()
