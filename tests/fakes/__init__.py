"""Fake upstream AI providers for tests: real HTTP servers that speak each wire protocol.

    with FakeOpenAI.start() as fake:           # or FakeAnthropic / FakeGemini / FakeReplicate
        settings.OPENAI_BASE_URL = fake.base_url  # .../v1 for OpenAI; no /v1, /v1beta for the others
        fake.reply("Hi there", finish_reason="content_filter")
        fake.fail(503)                          # the next request gets OpenAI's own 503 body
        ...
        assert fake.requests[0].json["model"] == "gpt-4o-mini"

Defaults a gateway test can rely on: the reply text is "Hello from fake <provider>";
input tokens = whitespace-separated words across the prompt (system text included),
output tokens = words in the reply; a stream sends one word per content delta; a
max-tokens limit below the reply's length cuts it, with the provider's "length" reason.
Faults apply to the next matching requests in the order they were queued, one per request.
"""

from .anthropic import FakeAnthropic
from .gemini import FakeGemini
from .openai import INSUFFICIENT_QUOTA, FakeOpenAI, FakeOpenAICompatible
from .replicate import NSFW_ERROR, FakeReplicate
from .server import FakeProvider, FakeToolCall, Received, TokenCounts, count_words, split_words

__all__ = [
    "INSUFFICIENT_QUOTA",
    "NSFW_ERROR",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeOpenAICompatible",
    "FakeProvider",
    "FakeToolCall",
    "FakeReplicate",
    "Received",
    "TokenCounts",
    "count_words",
    "split_words",
]
