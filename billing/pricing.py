"""Cost arithmetic: exact Decimal, from the prices in force when the request ran."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from core.modality import Modality
from providers.clients.base import Usage
from providers.routing import Prices

MILLION = Decimal(1_000_000)
# Ledger precision: a millionth of a cent is below any provider's billing unit.
COST_QUANTUM = Decimal("0.00000001")


def _price(price: Decimal | None, what: str) -> Decimal:
    if price is None:  # routes without their prices are refused before any call
        raise ValueError(f"the {what} price is not set for this route")
    return price


def chat_cost(usage: Usage, prices: Prices) -> Decimal:
    """USD cost of a chat call, every token kind at its own rate: the prompt tokens read from or
    written to the provider's cache at the cache prices (the input price where a route sets none),
    the rest of the prompt at the input price, and the output (reasoning included) at the output price."""
    input_price = _price(prices.input_usd_per_mtok, "input token")
    cached, written, written_1h = usage.cached_input_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens
    plain_input = max(usage.input_tokens - cached - written - written_1h, 0)
    per_kind = (
        (plain_input, input_price),
        (cached, _or(prices.cached_input_usd_per_mtok, input_price)),
        (written, _or(prices.cache_write_usd_per_mtok, input_price)),
        (written_1h, _or(prices.cache_write_1h_usd_per_mtok, input_price)),
        (usage.output_tokens, _price(prices.output_usd_per_mtok, "output token")),
    )
    cost = sum((Decimal(tokens) * price for tokens, price in per_kind), Decimal(0)) / MILLION
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def _or(price: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if price is None else price


def dearest_chat_usage(input_tokens: int, output_tokens: int, prices: Prices) -> Usage:
    """The usage a budget must hold for a chat call: every prompt token of the kind that costs most.
    A cache write costs more than plain input (Anthropic: 1.25x for 5 minutes, 2x for an hour), and
    whether the provider writes the cache is not known before it answers."""
    input_price = _price(prices.input_usd_per_mtok, "input token")
    write = _or(prices.cache_write_usd_per_mtok, input_price)
    write_1h = _or(prices.cache_write_1h_usd_per_mtok, input_price)
    if max(write, write_1h) <= input_price:
        return Usage(input_tokens, output_tokens)
    if write_1h >= write:
        return Usage(input_tokens, output_tokens, cache_write_1h_tokens=input_tokens)
    return Usage(input_tokens, output_tokens, cache_write_tokens=input_tokens)


def image_cost(images: int, prices: Prices) -> Decimal:
    cost = Decimal(images) * _price(prices.usd_per_image, "image")
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def video_cost(seconds: Decimal, prices: Prices) -> Decimal:
    cost = Decimal(seconds) * _price(prices.usd_per_video_second, "video second")
    return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def usage_cost(usage: Usage, prices: Prices, modality: str) -> Decimal:
    """USD cost of what one call produced, by the unit its modality is billed in."""
    if modality == Modality.IMAGE:
        return image_cost(usage.images, prices)
    if modality == Modality.VIDEO:
        return video_cost(usage.video_seconds, prices)
    return chat_cost(usage, prices)


def usd_text(cost: Decimal) -> str:
    """A cost as clients see it: fixed-point, never exponent form ("0.00000000", not "0E-8")."""
    return f"{cost.quantize(COST_QUANTUM):f}"
