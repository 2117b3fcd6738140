"""The routing table: model name -> ordered candidates (primary route, its fallback
chain, then the request's own fallbacks).

Workers keep the whole table in memory and check a version number in the
shared cache at most every PULSE_LOCAL_CACHE_SECONDS; any admin edit bumps the
version (providers/signals.py), so a change reaches every worker within that
interval and a normal request reads no database row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from core.modality import Modality
from core.snapshot import VersionedSnapshot
from providers.clients.base import ProviderConfig
from providers.models import ModelRoute

VERSION_KEY = "routing:version"


@dataclass(frozen=True)
class Prices:
    """A route's prices; None where the admin has set none."""

    input_usd_per_mtok: Decimal | None = None
    output_usd_per_mtok: Decimal | None = None
    usd_per_image: Decimal | None = None
    usd_per_video_second: Decimal | None = None
    # None: billed at the input price.
    cached_input_usd_per_mtok: Decimal | None = None
    cache_write_usd_per_mtok: Decimal | None = None
    cache_write_1h_usd_per_mtok: Decimal | None = None

    def covers(self, modality: str) -> bool:
        """Whether every price this modality is billed by is set."""
        return all(getattr(self, name) is not None for name in _BILLED_BY[modality])


# The prices each modality is billed by (checked per candidate on every request, so a table, not a
# mapping of values built per call).
_BILLED_BY: dict[str, tuple[str, ...]] = {
    Modality.CHAT: ("input_usd_per_mtok", "output_usd_per_mtok"),
    Modality.IMAGE: ("usd_per_image",),
    Modality.VIDEO: ("usd_per_video_second",),
}


@dataclass(frozen=True)
class Route:
    name: str
    provider: ProviderConfig
    provider_enabled: bool
    enabled: bool
    upstream_model: str
    modality: str
    priority: int
    default_max_tokens: int
    prices: Prices
    fallbacks: tuple[str, ...]
    moderation_enabled: bool = True
    fallback_on_refusal: bool = False

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name

    def matches(self, model: str) -> bool:
        prefix, _, suffix = self.name.partition("*")
        return len(model) >= len(prefix) + len(suffix) and model.startswith(prefix) and model.endswith(suffix)

    def upstream_for(self, model: str) -> str:
        """The provider's model name: the route's own, else the requested one minus a 'provider:' prefix."""
        if self.upstream_model:
            return self.upstream_model
        namespace, colon, rest = model.partition(":")
        return rest if colon and self.name.startswith(namespace + ":") else model


@dataclass(frozen=True)
class Candidate:
    """One provider call to try: which route, and the upstream model name to send."""

    route: Route
    upstream_model: str

    @property
    def provider(self) -> ProviderConfig:
        return self.route.provider


class RoutingTable:
    def __init__(self, routes: Iterable[Route]):
        self.routes = list(routes)
        self._exact = {route.name: route for route in self.routes if not route.is_pattern}
        # Among patterns: lowest priority number first, then the most specific (longest literal part).
        self._patterns = sorted((r for r in self.routes if r.is_pattern), key=lambda r: (r.priority, -len(r.name)))

    def match(self, model: str) -> Route | None:
        return self._exact.get(model) or next((r for r in self._patterns if r.matches(model)), None)

    def candidates(
        self, model: str, extra_fallbacks: Sequence[str] = (), modality: str = Modality.CHAT
    ) -> list[Candidate]:
        """Candidates in order, skipping repeats and anything disabled; [] when model has no usable route."""
        primary = self.match(model)
        if primary is None or not primary.enabled or primary.modality != modality:
            return []
        steps = [(primary, model)]
        steps += [(self._exact[name], name) for name in primary.fallbacks if name in self._exact]
        steps += [(route, name) for name in extra_fallbacks if (route := self.match(name))]
        seen, chosen = set(), []
        for route, name in steps:
            candidate = Candidate(route, route.upstream_for(name))
            key = (route.provider.name, candidate.upstream_model)
            if route.enabled and route.provider_enabled and route.modality == modality and key not in seen:
                seen.add(key)
                chosen.append(candidate)
        return chosen


def _route_from_row(row: ModelRoute) -> Route:
    p = row.provider
    provider = p.config()
    prices = Prices(
        row.input_usd_per_mtok,
        row.output_usd_per_mtok,
        row.usd_per_image,
        row.usd_per_video_second,
        row.cached_input_usd_per_mtok,
        row.cache_write_usd_per_mtok,
        row.cache_write_1h_usd_per_mtok,
    )
    fallbacks = tuple(step.fallback.name for step in row.fallback_steps.all())
    return Route(
        row.name,
        provider,
        p.enabled,
        row.enabled,
        row.upstream_model,
        row.modality,
        row.priority,
        row.default_max_tokens,
        prices,
        fallbacks,
        row.moderation_enabled,
        row.fallback_on_refusal,
    )


def load_routing_table() -> RoutingTable:
    # Disabled routes are loaded too: a disabled exact name must not fall through to a pattern.
    rows = ModelRoute.objects.select_related("provider").prefetch_related("fallback_steps__fallback")
    return RoutingTable(_route_from_row(row) for row in rows)


_table: VersionedSnapshot[RoutingTable] = VersionedSnapshot(VERSION_KEY, load_routing_table)


def bump_routing_version() -> None:
    """Tell every worker to reload the table (called after any provider or route change commits)."""
    _table.bump()


def routing_table() -> RoutingTable:
    return _table.get()


async def arouting_table() -> RoutingTable:
    return await _table.aget()


def reset_routing_table() -> None:
    """Forget this worker's copy of the table: the next lookup loads it afresh (tests, between cases)."""
    _table.reset()
