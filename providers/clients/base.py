"""The shape every provider client shares: Pulse's normalised chat request and answer,
one error type that says whether another candidate may be tried, and the small
base class that owns the pooled HTTP session and the timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from providers.http import shared_session

# Finish reasons, normalised (the OpenAI vocabulary).
STOP, LENGTH, CONTENT_FILTER, TOOL_CALLS = "stop", "length", "content_filter", "tool_calls"

# Upstream statuses worth another candidate: overload, throttling, server faults.
# 401/403 mean Pulse's own provider credentials are wrong: not the client's fault,
# so another provider may still answer.
# 402 is Anthropic's billing_error: Pulse's own account is out of credit.
RETRYABLE_STATUSES = frozenset({401, 402, 403, 408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class ProviderConfig:
    """A provider as the hot path sees it (from the routing snapshot, key decrypted)."""

    name: str
    kind: str
    base_url: str
    api_key: str = field(repr=False)  # decrypted: never in a repr, a log line or a traceback
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def system_text(self) -> str:
        """All system messages joined: the providers that take system text apart want one string."""
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def dialogue(self) -> tuple[ChatMessage, ...]:
        return tuple(m for m in self.messages if m.role != "system")


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # True when the provider never reported usage (e.g. a cut stream)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatResult:
    content: str
    finish_reason: str
    usage: Usage
    upstream_model: str
    upstream_id: str | None = None


@dataclass
class ChatDelta:
    """One piece of a stream: text, and on the last pieces the finish reason and/or usage."""

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class ProviderError(Exception):
    """Any failure talking to a provider. retryable: another candidate may be tried."""

    message: str
    provider: str
    retryable: bool
    status: int | None = None  # the upstream HTTP status, None for connect errors and timeouts
    code: str = "upstream_error"
    retry_after_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}"


class ChatClient:
    """Base of the per-protocol clients: subclasses implement complete() and stream()."""

    def __init__(self, provider: ProviderConfig):
        self.provider = provider
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=provider.connect_timeout_s, sock_read=provider.read_timeout_s
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        return shared_session()

    async def complete(self, request: ChatRequest, *, model: str) -> ChatResult:
        raise NotImplementedError

    def stream(self, request: ChatRequest, *, model: str) -> AsyncIterator[ChatDelta]:
        raise NotImplementedError

    def error(self, message: str, *, retryable: bool, **kwargs: Any) -> ProviderError:
        return ProviderError(message, self.provider.name, retryable, **kwargs)

    def transport_error(self, exc: BaseException) -> ProviderError:
        """A connect error, a timeout or a broken connection: always worth another candidate."""
        if isinstance(exc, asyncio.TimeoutError):
            return self.error("timed out waiting for the provider", retryable=True, code="upstream_timeout")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self.error("the answer broke off midway", retryable=True, code="upstream_stream_cut")
        return self.error(f"connection failed: {type(exc).__name__}", retryable=True, code="upstream_unreachable")
