"""Chat clients, one module per upstream wire protocol, and the registry that picks one."""

from __future__ import annotations

from functools import lru_cache

from providers.clients.anthropic import AnthropicChatClient
from providers.clients.base import ChatClient, ProviderConfig
from providers.clients.gemini import GeminiChatClient
from providers.clients.openai import OpenAIChatClient

CHAT_CLIENTS: dict[str, type[ChatClient]] = {
    "openai": OpenAIChatClient,
    "openai_compatible": OpenAIChatClient,
    "anthropic": AnthropicChatClient,
    "gemini": GeminiChatClient,
}


@lru_cache(maxsize=256)
def chat_client_for(provider: ProviderConfig) -> ChatClient:
    """One client per provider config: clients hold no connection (the pool is per event
    loop), and a changed key or timeout is a new config, hence a new client."""
    client_class = CHAT_CLIENTS.get(provider.kind)
    if client_class is None:
        raise ValueError(f"provider {provider.name!r} is of kind {provider.kind!r}, which has no chat client")
    return client_class(provider)


__all__ = [
    "CHAT_CLIENTS",
    "AnthropicChatClient",
    "GeminiChatClient",
    "OpenAIChatClient",
    "chat_client_for",
]
