from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from providers.defaults import default_routes
from providers.models import ModelRoute, Provider
from providers.price_table import PriceTableError


class Command(BaseCommand):
    help = (
        "Create or update Provider rows from the environment (*_API_KEY, *_BASE_URL) and add the "
        "routes of the price table (providers/prices.toml) that are missing. Idempotent; routes edited "
        "in the admin are left alone."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            routes = default_routes()  # read and checked before the first write
        except PriceTableError as exc:
            raise CommandError(str(exc)) from None
        for kind, conf in settings.PROVIDER_ENV.items():
            self._sync_provider(kind, conf["api_key"], conf["base_url"])
        providers = {p.name: p for p in Provider.objects.all()}
        created = 0
        for route in routes:
            if route.provider not in providers:
                continue
            _, was_created = ModelRoute.objects.get_or_create(
                name=route.name,
                defaults={
                    "provider": providers[route.provider],
                    "upstream_model": route.upstream_model,
                    "modality": route.modality,
                    "priority": 200 if route.is_pattern else 100,
                    **route.prices,
                },
            )
            created += was_created
        self.stdout.write(f"providers: {', '.join(sorted(providers)) or 'none'}; {created} route(s) added")

    def _sync_provider(self, kind: str, api_key: str, base_url: str) -> None:
        """A key in the environment creates or updates the provider named after its kind."""
        if not api_key:
            return
        provider = Provider.objects.filter(name=kind).first() or Provider(name=kind, kind=kind)
        provider.base_url = base_url.rstrip("/")
        provider.api_key = api_key
        provider.save()
