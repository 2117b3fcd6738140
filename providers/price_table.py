"""The shipped price table (providers/prices.toml): read, checked and turned into route definitions.

The table is data that people review, not code, so every mistake in it is reported by the entry it
is in (its name, or its position when the name is missing) rather than surfacing later as a wrong
bill: unknown fields, prices that are not exact decimals a route can hold, a price without its
`checked` date or its `verified` basis, a price that does not fit the route's modality, and a name
listed twice.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.modality import Modality

PRICE_TABLE = Path(__file__).with_name("prices.toml")

# The table's short price names -> ModelRoute fields; which names each modality is billed by.
TOKEN_PRICES = {
    "input": "input_usd_per_mtok",
    "cached_input": "cached_input_usd_per_mtok",
    "cache_write": "cache_write_usd_per_mtok",
    "cache_write_1h": "cache_write_1h_usd_per_mtok",
    "output": "output_usd_per_mtok",
}
PRICES_BY_MODALITY: dict[str, dict[str, str]] = {
    Modality.CHAT: TOKEN_PRICES,
    Modality.IMAGE: {"image": "usd_per_image"},
    Modality.VIDEO: {"video_second": "usd_per_video_second"},
}
# Every ModelRoute price field, so a route the table leaves unpriced is synced to "not priced".
PRICE_FIELDS = tuple(dict.fromkeys(f for prices in PRICES_BY_MODALITY.values() for f in prices.values()))
PROVIDERS = frozenset({"openai", "anthropic", "gemini", "replicate", "openai_compatible"})
# verified: how the prices were last checked (see the head of prices.toml).
VERIFIED = frozenset({"provider", "third-party", "carried-over"})
REQUIRED_FIELDS = frozenset({"name", "provider", "modality"})
OPTIONAL_FIELDS = frozenset({"upstream", "prices", "checked", "verified", "source", "note"})
# ModelRoute prices are DecimalField(max_digits=12, decimal_places=6).
MAX_PLACES, MAX_DIGITS = 6, 12


class PriceTableError(ValueError):
    """The price table cannot be used as it is; the message names the entry and what is wrong."""


@dataclass(frozen=True)
class TableRoute:
    """One route as the table defines it; `prices` maps ModelRoute price fields to USD."""

    name: str
    provider: str
    modality: str
    upstream_model: str = ""
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    checked: dt.date | None = None
    verified: str | None = None
    source: str = ""

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name

    def price_fields(self) -> dict[str, Decimal | None]:
        """Every ModelRoute price field: the table's price, or None where the table sets none."""
        return {name: self.prices.get(name) for name in PRICE_FIELDS}


def load_price_table(path: Path = PRICE_TABLE) -> list[TableRoute]:
    """The routes in the table at `path`, in its order; PriceTableError if any entry is wrong."""
    try:
        # parse_float=Decimal: 0.1 in the file is exactly 0.1, never a binary float near it.
        document = tomllib.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PriceTableError(f"{path}: {exc}") from exc
    return parse_price_table(document, where=str(path))


def parse_price_table(document: Mapping[str, Any], *, where: str = "price table") -> list[TableRoute]:
    unknown = set(document) - {"route"}
    if unknown:
        raise PriceTableError(f"{where}: unknown top-level key(s) {sorted(unknown)}; entries are [[route]] tables")
    entries = document.get("route", [])
    if not isinstance(entries, list):
        raise PriceTableError(f"{where}: 'route' must be an array of tables ([[route]])")
    routes: list[TableRoute] = []
    seen: dict[str, int] = {}
    for position, entry in enumerate(entries, start=1):
        label = _label(entry, position)
        try:
            route = _route(entry)
        except PriceTableError as exc:
            raise PriceTableError(f"{where}: {label}: {exc}") from None
        if route.name in seen:
            raise PriceTableError(f"{where}: {label}: duplicate name (also entry #{seen[route.name]})")
        seen[route.name] = position
        routes.append(route)
    return routes


def _label(entry: object, position: int) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"route {name!r} (entry #{position})" if isinstance(name, str) else f"entry #{position}"


def _route(entry: object) -> TableRoute:
    if not isinstance(entry, dict):
        raise PriceTableError("not a table")
    unknown = set(entry) - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if unknown:
        raise PriceTableError(f"unknown field(s) {sorted(unknown)}")
    missing = REQUIRED_FIELDS - set(entry)
    if missing:
        raise PriceTableError(f"missing field(s) {sorted(missing)}")
    name, provider, modality = (_text(entry, key) for key in ("name", "provider", "modality"))
    if not name or name.count("*") > 1:
        raise PriceTableError("name must be a model name or a pattern with one '*'")
    if provider not in PROVIDERS:
        raise PriceTableError(f"provider {provider!r} is not one of {sorted(PROVIDERS)}")
    if modality not in PRICES_BY_MODALITY:
        raise PriceTableError(f"modality {modality!r} is not one of {sorted(PRICES_BY_MODALITY)}")
    prices = _prices(entry.get("prices", {}), modality)
    checked, verified, source = _provenance(entry, priced=bool(prices))
    upstream = _text(entry, "upstream") if "upstream" in entry else ""
    if "note" in entry:
        _text(entry, "note")  # free text for reviewers; only its type is checked
    return TableRoute(name, provider, modality, upstream, prices, checked, verified, source)


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry[key]
    if not isinstance(value, str):
        raise PriceTableError(f"{key} must be a string, not {type(value).__name__}")
    return value.strip()


def _prices(value: object, modality: str) -> dict[str, Decimal]:
    if not isinstance(value, dict):
        raise PriceTableError("prices must be a table, e.g. prices = { input = 1.25, output = 10 }")
    allowed = PRICES_BY_MODALITY[modality]
    wrong = set(value) - set(allowed)
    if wrong:
        raise PriceTableError(f"price(s) {sorted(wrong)} do not apply to a {modality} route (it takes {list(allowed)})")
    prices = {allowed[key]: check_usd(key, price) for key, price in value.items()}
    if modality == Modality.CHAT and prices and not {"input", "output"} <= set(value):
        # Half a price would refuse every request anyway (model_not_priced): say so here instead.
        raise PriceTableError("a priced chat route needs both input and output prices")
    return prices


def check_usd(key: str, value: object) -> Decimal:
    """`value` as a price a route can hold (a number of 0 or more, at most 6 decimal places)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PriceTableError(f"price {key!r} must be a number (e.g. 0.125), not {value!r}")
    price = Decimal(value)
    if not price.is_finite() or price < 0:
        raise PriceTableError(f"price {key!r} must be a finite amount of 0 or more, not {value}")
    exponent = price.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > MAX_PLACES or len(price.quantize(Decimal(1)).as_tuple().digits) > MAX_DIGITS - MAX_PLACES:
        raise PriceTableError(f"price {key!r} = {value} does not fit a route price ({MAX_PLACES} decimal places)")
    return price


def _provenance(entry: Mapping[str, Any], *, priced: bool) -> tuple[dt.date | None, str | None, str]:
    """(checked, verified, source); a price is only shipped with the date and basis of its check."""
    checked = entry.get("checked")
    if checked is not None and (isinstance(checked, dt.datetime) or not isinstance(checked, dt.date)):
        raise PriceTableError(f"checked must be a date like 2026-12-02, not {checked!r}")
    verified = _text(entry, "verified") if "verified" in entry else None
    if verified is not None and verified not in VERIFIED:
        raise PriceTableError(f"verified {verified!r} is not one of {sorted(VERIFIED)}")
    source = _text(entry, "source") if "source" in entry else ""
    if priced:
        if checked is None:
            raise PriceTableError("priced, but no checked date (when were these prices last checked?)")
        if verified is None:
            raise PriceTableError(f"priced, but no verified basis (one of {sorted(VERIFIED)})")
        if not source:
            raise PriceTableError("priced, but no source (where the prices were read)")
    return checked, verified, source
