"""bulkusers: bulk-update LivePerson Conversational Cloud users from a CSV, safely and fast."""

from __future__ import annotations

__all__: list[str] = []
