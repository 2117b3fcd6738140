from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.modality import Modality
from providers.defaults import default_routes
from providers.models import ModelRoute, Provider
from providers.price_table import PriceTableError, TableRoute, check_usd

COMPATIBLE = Provider.Kind.OPENAI_COMPATIBLE.value
# Any model of the OpenAI-compatible server by its own name: "local:llama3.2" asks it for "llama3.2".
COMPATIBLE_PATTERN = "local:*"
COMPATIBLE_PRICE_ENV = {
    "input_usd_per_mtok": "OPENAI_COMPATIBLE_INPUT_USD_PER_MTOK",
    "output_usd_per_mtok": "OPENAI_COMPATIBLE_OUTPUT_USD_PER_MTOK",
}


@dataclass
class RouteChanges:
    """What one sync did to the routes, for its report."""

    added: list[str] = field(default_factory=list)
    repriced: list[str] = field(default_factory=list)  # "name: field old -> new, ..."
    left: list[str] = field(default_factory=list)  # "name: why", where the definition differs but the row stays

    def lines(self) -> list[str]:
        return [f"  repriced {line}" for line in self.repriced] + [f"  left {line}" for line in self.left]


class Command(BaseCommand):
    help = (
        "Create or update Provider rows from the environment (*_API_KEY, *_BASE_URL; "
        "OPENAI_COMPATIBLE_BASE_URL and OPENAI_COMPATIBLE_MODELS), add the routes of the price table "
        "(providers/prices.toml) that are missing, and bring up to date the prices of routes whose prices "
        "still come from the table. Idempotent; prices an admin edited are left alone."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        # Everything is read and checked before the first write: a bad table or setting changes nothing.
        try:
            shipped = default_routes()
        except PriceTableError as exc:
            raise CommandError(str(exc)) from None
        compatible = compatible_routes(settings.PROVIDER_ENV.get(COMPATIBLE, {}))
        for kind, conf in settings.PROVIDER_ENV.items():
            sync_provider(kind, conf)
        providers = {p.name: p for p in Provider.objects.all()}
        changes = RouteChanges()
        for route in [*shipped, *compatible]:
            if route.provider in providers:
                sync_route(route, providers[route.provider], changes)
        self.stdout.write(
            f"providers: {', '.join(sorted(providers)) or 'none'}; {len(changes.added)} route(s) added, "
            f"{len(changes.repriced)} repriced, {len(changes.left)} left as an admin set them"
        )
        for line in changes.lines():
            self.stdout.write(line)


def sync_provider(kind: str, conf: Mapping[str, Any]) -> None:
    """A provider's settings in the environment create or update the provider named after its kind:
    its key for the hosted providers, its base URL for an OpenAI-compatible server (Ollama, LM Studio
    and vLLM without --api-key take no key)."""
    api_key, base_url = conf.get("api_key", ""), conf.get("base_url", "")
    if not (base_url if kind == COMPATIBLE else api_key):
        return
    provider = Provider.objects.filter(name=kind).first() or Provider(name=kind, kind=kind)
    provider.base_url = base_url.rstrip("/")
    if api_key:  # no key in the environment keeps the one an admin may have set
        provider.api_key = api_key
    provider.save()


def compatible_routes(conf: Mapping[str, Any]) -> list[TableRoute]:
    """The OpenAI-compatible server's routes: one chat route per OPENAI_COMPATIBLE_MODELS name and the
    local:* pattern, at the OPENAI_COMPATIBLE_* prices (often 0 when self-hosted), else unpriced."""
    if not conf.get("base_url"):
        return []
    prices = compatible_prices(conf)
    names = dict.fromkeys(name.strip() for name in conf.get("models", ()) if name.strip())
    for name in names:
        if "*" in name:
            raise CommandError(
                f"OPENAI_COMPATIBLE_MODELS: {name!r} is a pattern; list model names ({COMPATIBLE_PATTERN} is added)"
            )
    return [TableRoute(name, COMPATIBLE, Modality.CHAT, prices=prices) for name in [*names, COMPATIBLE_PATTERN]]


def compatible_prices(conf: Mapping[str, Any]) -> dict[str, Decimal]:
    given = {name: str(conf.get(name) or "").strip() for name in COMPATIBLE_PRICE_ENV}
    if not any(given.values()):
        return {}
    if not all(given.values()):
        raise CommandError(f"Set both {' and '.join(COMPATIBLE_PRICE_ENV.values())}, or neither")
    prices = {}
    for route_field, text in given.items():
        name = COMPATIBLE_PRICE_ENV[route_field]
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise CommandError(f"{name}={text!r} is not a number of USD per million tokens (e.g. 0 or 0.15)") from None
        try:
            prices[route_field] = check_usd(name, amount)
        except PriceTableError as exc:
            raise CommandError(f"{name}={text!r}: {exc}") from None
    return prices


def sync_route(route: TableRoute, provider: Provider, changes: RouteChanges) -> None:
    """Add the route if it is missing; else bring its prices to the definition's while they still come
    from it. Only prices are synced: an admin's upstream model, priority or fallbacks stay."""
    row = ModelRoute.objects.filter(name=route.name).select_related("provider").first()
    if row is None:
        ModelRoute.objects.create(
            name=route.name,
            provider=provider,
            upstream_model=route.upstream_model,
            modality=route.modality,
            priority=200 if route.is_pattern else 100,
            prices_from_table=True,
            **route.prices,
        )
        changes.added.append(route.name)
        return
    wanted = route.price_fields()
    differ = {name: price for name, price in wanted.items() if getattr(row, name) != price}
    if not differ:
        return
    if row.provider_id != provider.pk:
        changes.left.append(f"{route.name}: on provider {row.provider.name}, not {provider.name}")
    elif not row.prices_from_table:
        changes.left.append(f"{route.name}: priced by an admin; sync would set {describe(row, differ)}")
    else:
        old = describe(row, differ)
        for name, price in differ.items():
            setattr(row, name, price)
        row.save(update_fields=[*differ, "updated_at"])  # save(): the signal tells every worker
        changes.repriced.append(f"{route.name}: {old}")


def describe(row: ModelRoute, wanted: Mapping[str, Decimal | None]) -> str:
    """'field row-price -> wanted-price, ...' for the prices that differ."""
    return ", ".join(f"{name} {usd(getattr(row, name))} -> {usd(price)}" for name, price in wanted.items())


def usd(price: Decimal | None) -> str:
    return "unpriced" if price is None else f"{price.normalize():f}"
