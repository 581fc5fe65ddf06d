"""Credentials for the Authorization header: none (the simulator), a static bearer token, or
OAuth 2.0 client credentials renewed before they expire."""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr


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
