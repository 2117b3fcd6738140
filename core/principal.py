"""Who a request acts for: an API key and its owner, as cached (no model instances on the hot path)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from core.caps import Caps


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the key and its owner, as cached (no model instances)."""

    key_id: int | None  # None: a user signed in to the web pages, acting without a key
    key_hash: str
    key_prefix: str
    user_id: int
    username: str
    is_staff: bool
    expires_at: datetime | None
    rate_limit: tuple[int, float] | None = None  # the owner's override of RATE_LIMIT
    caps: Caps | None = None  # the owner's monthly caps, None when there are none

    is_authenticated = True
    is_anonymous = False
    is_active = True

    @property
    def pk(self) -> int:
        return self.user_id

    id = pk

    def to_cache(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cache(cls, entry: dict[str, Any]) -> Principal:
        caps = entry.get("caps")
        return cls(
            **{
                **entry,
                "caps": Caps(**caps) if caps else None,
                "rate_limit": tuple(entry["rate_limit"]) if entry.get("rate_limit") else None,
            }
        )

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
