"""A user's monthly caps, as carried in the cached principal (no model instance on the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


class CapFields(Protocol):
    """The cap columns of billing's UserLimits (core sits below billing and cannot import it)."""

    @property
    def monthly_spend_cap_usd(self) -> Decimal | None: ...
    @property
    def monthly_token_cap(self) -> int | None: ...
    @property
    def monthly_image_cap(self) -> int | None: ...
    @property
    def monthly_video_seconds_cap(self) -> int | None: ...


@dataclass(frozen=True)
class Caps:
    spend_usd: Decimal | None = None
    tokens: int | None = None
    images: int | None = None
    video_seconds: int | None = None

    @classmethod
    def of(cls, limits: CapFields) -> Caps | None:
        """The caps set on a UserLimits row, or None when it sets none."""
        caps = cls(
            limits.monthly_spend_cap_usd,
            limits.monthly_token_cap,
            limits.monthly_image_cap,
            limits.monthly_video_seconds_cap,
        )
        return caps if caps != cls() else None
