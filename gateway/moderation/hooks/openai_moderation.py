"""The OpenAI moderation hook: POST {base_url}/moderations (omni-moderation-latest), one call
covering every text of a request.

It uses the enabled provider of kind "openai" (or the one MODERATION_OPENAI_PROVIDER names),
its base URL and key, through the OpenAI client (providers/clients/openai.py: its session and error
mapping), with a short total timeout (MODERATION_OPENAI_TIMEOUT_S): every request waits on it.

A text is blocked when a category's score reaches its MODERATION_OPENAI_THRESHOLDS entry;
categories without one block when the API flags them. When the API cannot be reached or
answers an error, the hook cannot decide: MODERATION_OPENAI_FAIL_OPEN=false (the default)
answers 503 moderation_unavailable, because an operator who turned this hook on wants no
prompt to reach a provider unscreened; true lets the request through, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.snapshot import VersionedSnapshot
from gateway.moderation.base import ALLOWED, HookUnavailable, ModerationHook, Verdict
from providers.clients import client_for
from providers.clients.base import ProviderConfig, ProviderError
from providers.clients.openai import OpenAIClient
from providers.routing import VERSION_KEY as ROUTING_VERSION_KEY

logger = logging.getLogger(__name__)
MODERATION_KINDS = ("openai", "openai_compatible")


def parse_thresholds(raw: Mapping[str, Any]) -> dict[str, float]:
    """{category: threshold} from settings (values may be strings, as read from the environment)."""
    try:
        thresholds = {str(category): float(value) for category, value in raw.items()}
    except (TypeError, ValueError, AttributeError):
        thresholds = None
    if thresholds is None or any(not 0 <= value <= 1 for value in thresholds.values()):
        raise ImproperlyConfigured(
            f"MODERATION_OPENAI_THRESHOLDS={raw!r}: expected category=score pairs with "
            "scores from 0 to 1, e.g. violence=0.5,self-harm/intent=0.2"
        )
    return thresholds


def load_moderation_provider() -> ProviderConfig | None:
    """The provider that answers moderation calls, as the hot path needs it (key decrypted)."""
    from providers.models import Provider

    providers = Provider.objects.filter(enabled=True, kind__in=MODERATION_KINDS)
    name = settings.MODERATION_OPENAI_PROVIDER
    row = providers.filter(name=name).first() if name else providers.filter(kind="openai").order_by("name").first()
    if row is None:
        return None
    return row.config()


# Provider edits bump the routing table's version: the same key tells this copy to reload.
provider_snapshot: VersionedSnapshot[ProviderConfig | None] = VersionedSnapshot(
    ROUTING_VERSION_KEY, load_moderation_provider
)


class OpenAIModerationHook(ModerationHook):
    name = "openai_moderation"

    def __init__(self) -> None:
        self.fail_open = bool(settings.MODERATION_OPENAI_FAIL_OPEN)
        self.model = settings.MODERATION_OPENAI_MODEL
        self.timeout_s = float(settings.MODERATION_OPENAI_TIMEOUT_S)
        self.thresholds = parse_thresholds(settings.MODERATION_OPENAI_THRESHOLDS)

    def verdict(self, result: Mapping[str, Any]) -> Verdict:
        scores: Mapping[str, float] = result.get("category_scores") or {}
        hits = {
            name: float(score)
            for name, score in scores.items()
            if name in self.thresholds and float(score) >= self.thresholds[name]
        }
        hits |= {
            name: float(scores.get(name, 1.0))
            for name, flagged in (result.get("categories") or {}).items()
            if flagged is True and name not in self.thresholds
        }
        if not hits:
            return ALLOWED
        category = max(hits, key=hits.__getitem__)
        rule = f">= threshold {self.thresholds[category]}" if category in self.thresholds else "(flagged by the API)"
        return Verdict.block(category, f"OpenAI moderation: {category} score {hits[category]:.3f} {rule}")

    async def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        verdicts = [ALLOWED] * len(texts)
        asked = [index for index, text in enumerate(texts) if text.strip()]
        if not asked:
            return verdicts
        provider = await provider_snapshot.aget()
        if provider is None:
            raise HookUnavailable("no enabled OpenAI provider to call for moderation")
        client = client_for(provider)
        if not isinstance(client, OpenAIClient):
            raise HookUnavailable(f"provider {provider.name} ({provider.kind}) does not speak the moderation API")
        try:
            results = await client.moderate(
                [texts[index] for index in asked], model=self.model, timeout_s=self.timeout_s
            )
            for index, result in zip(asked, results, strict=True):
                verdicts[index] = client.parse(self.verdict, result)
        except ProviderError as error:
            raise HookUnavailable(f"OpenAI moderation failed: {error} ({error.code})") from error
        return verdicts

    async def check(self, text: str) -> Verdict:
        return (await self.check_many([text]))[0]
