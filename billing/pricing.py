"""Cost arithmetic: exact Decimal, from the prices in force when the request ran."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from providers.clients.base import Usage
from providers.routing import Prices

MILLION = Decimal(1_000_000)
# Ledger precision: a millionth of a cent is below any provider's billing unit.
COST_QUANTUM = Decimal("0.00000001")


def chat_cost(usage: Usage, prices: Prices) -> Decimal:
    """USD cost of a chat call. Cached input tokens are billed as input (no discount is configured)."""
    if not prices.covers("chat"):
        raise ValueError("chat prices are not set for this route")  # routes without them are refused earlier
    cost = (
        Decimal(usage.input_tokens) * prices.input_usd_per_mtok
        + Decimal(usage.output_tokens) * prices.output_usd_per_mtok
    ) / MILLION
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def image_cost(images: int, prices: Prices) -> Decimal:
    return (Decimal(images) * prices.usd_per_image).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def video_cost(seconds: Decimal, prices: Prices) -> Decimal:
    return (Decimal(seconds) * prices.usd_per_video_second).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def usd_text(cost: Decimal) -> str:
    """A cost as clients see it: fixed-point, never exponent form ("0.00000000", not "0E-8")."""
    return f"{cost.quantize(COST_QUANTUM):f}"
