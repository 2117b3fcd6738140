"""The Anthropic Messages API, served: `POST /v1/messages` and `POST /v1/messages/count_tokens`, so
the official Anthropic SDKs and Claude Code work with base_url=<pulse>, on any provider.

A request parses into the normalised types (providers.clients.base) and runs through the one
pipeline like every chat request; the Anthropic client sends it back out in Anthropic's own shapes,
so a Claude round trip keeps what Claude Code relies on: signed thinking, tool loops, images and
cache breakpoints. OpenAI and Gemini get the same conversation through their own clients.

The normalised form decides a few things. A user turn's tool_result blocks become tool messages
(each its own ChatMessage), followed by a user message with the turn's other content. A cache
breakpoint belongs to a message's last block: a user turn is split after each block that carries
one, so each breakpoint stays where the client put it; an assistant turn keeps its breakpoint on its
last block (thinking, text and calls cannot be split apart), so there it may move later.

content     content blocks and turns (the messages and system fields) as ChatMessages
request     the other request fields, the two request serializers, and the normalised ChatRequest
answer      an answer's content blocks, stop reason, usage, and the error envelope
stream      AnthropicStream: the named server-sent events, one block open at a time
dialect     AnthropicDialect: parsing, answers, streams and errors for the chat pipeline
consumers   the two endpoints, and TokenCounting for count_tokens
"""

from gateway.messages.consumers import MESSAGES_CONSUMERS, CountTokensConsumer, MessagesConsumer
from gateway.messages.content import AnthropicMessages, AnthropicSystem
from gateway.messages.dialect import AnthropicDialect
from gateway.messages.request import (
    AnthropicToolChoice,
    AnthropicTools,
    CacheControlField,
    CountTokensRequest,
    MessagesRequest,
    MetadataField,
    OutputConfigField,
    ThinkingField,
)
from gateway.messages.stream import AnthropicStream

__all__ = [
    "MESSAGES_CONSUMERS",
    "AnthropicDialect",
    "AnthropicMessages",
    "AnthropicStream",
    "AnthropicSystem",
    "AnthropicToolChoice",
    "AnthropicTools",
    "CacheControlField",
    "CountTokensConsumer",
    "CountTokensRequest",
    "MessagesConsumer",
    "MessagesRequest",
    "MetadataField",
    "OutputConfigField",
    "ThinkingField",
]
