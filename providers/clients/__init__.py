"""Provider clients, one module per upstream wire protocol, and the registry that picks one
by Provider.kind."""

from __future__ import annotations

from functools import lru_cache

from providers.clients.anthropic import AnthropicClient
from providers.clients.base import ProviderClient, ProviderConfig
from providers.clients.gemini import GeminiClient
from providers.clients.openai import OpenAIClient, OpenAICompatibleClient
from providers.clients.replicate import ReplicateClient

CLIENTS: dict[str, type[ProviderClient]] = {
    "openai": OpenAIClient,
    "openai_compatible": OpenAICompatibleClient,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
    "replicate": ReplicateClient,
}


@lru_cache(maxsize=256)
def client_for(provider: ProviderConfig) -> ProviderClient:
    """One client per provider config: clients hold no connection (the pool is per event
    loop), and a changed key or timeout is a new config, hence a new client."""
    client_class = CLIENTS.get(provider.kind)
    if client_class is None:
        raise ValueError(f"provider {provider.name!r} is of kind {provider.kind!r}, which has no client")
    return client_class(provider)


__all__ = [
    "CLIENTS",
    "AnthropicClient",
    "GeminiClient",
    "OpenAIClient",
    "OpenAICompatibleClient",
    "ReplicateClient",
    "client_for",
]
