from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from providers.defaults import default_routes
from providers.models import ModelRoute, Provider
from providers.price_table import PriceTableError, TableRoute


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
        "Create or update Provider rows from the environment (*_API_KEY, *_BASE_URL), add the routes of "
        "the price table (providers/prices.toml) that are missing, and bring up to date the prices of "
        "routes whose prices still come from the table. Idempotent; prices an admin edited are left alone."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        # Everything is read and checked before the first write: a bad table or setting changes nothing.
        try:
            shipped = default_routes()
        except PriceTableError as exc:
            raise CommandError(str(exc)) from None
        for kind, conf in settings.PROVIDER_ENV.items():
            sync_provider(kind, conf)
        providers = {p.name: p for p in Provider.objects.all()}
        changes = RouteChanges()
        for route in shipped:
            if route.provider in providers:
                sync_route(route, providers[route.provider], changes)
        self.stdout.write(
            f"providers: {', '.join(sorted(providers)) or 'none'}; {len(changes.added)} route(s) added, "
            f"{len(changes.repriced)} repriced, {len(changes.left)} left as an admin set them"
        )
        for line in changes.lines():
            self.stdout.write(line)


def sync_provider(kind: str, conf: Mapping[str, Any]) -> None:
    """A key in the environment creates or updates the provider named after its kind."""
    api_key, base_url = conf.get("api_key", ""), conf.get("base_url", "")
    if not api_key:
        return
    provider = Provider.objects.filter(name=kind).first() or Provider(name=kind, kind=kind)
    provider.base_url = base_url.rstrip("/")
    provider.api_key = api_key
    provider.save()


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
