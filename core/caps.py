"""A user's monthly caps, as carried in the cached principal (no model instance on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Caps:
    spend_usd: Decimal | None = None
    tokens: int | None = None
    images: int | None = None
    video_seconds: int | None = None

    @classmethod
    def of(cls, limits) -> Caps | None:
        """The caps set on a UserLimits row, or None when it sets none."""
        caps = cls(
            limits.monthly_spend_cap_usd,
            limits.monthly_token_cap,
            limits.monthly_image_cap,
            limits.monthly_video_seconds_cap,
        )
        return caps if caps != cls() else None
