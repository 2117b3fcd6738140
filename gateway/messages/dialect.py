"""The Anthropic Messages API as a chat dialect: how the one chat pipeline reads and answers it.

Parsing goes through the request serializers, a whole answer is rendered by answer.py's shapes, a
stream by AnthropicStream, and errors in Anthropic's envelope.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.chat_formats import Answered, ChatCall, Dialect, validated
from gateway.errors import ApiError
from gateway.messages.answer import content_blocks, error_envelope, message_head, stop_reason, usage_json
from gateway.messages.request import CountTokensRequest, MessagesRequest, chat_request
from gateway.messages.stream import AnthropicStream
from providers.clients.base import ChatResult, Usage


class AnthropicDialect(Dialect):
    renderer = AnthropicStream

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = validated(MessagesRequest(data=payload))
        metadata = payload.get("metadata") or {}
        return ChatCall(data["model"], chat_request(data), stream=data["stream"], metadata=metadata)

    @staticmethod
    def parse_count(payload: Any) -> ChatCall:
        data = validated(CountTokensRequest(data=payload))
        return ChatCall(data["model"], chat_request(data))

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        return message_head(answered) | {
            "content": content_blocks(result),
            "stop_reason": stop_reason(result.finish_reason, bool(result.tool_calls)),
            "stop_sequence": None,
            "usage": usage_json(usage),
        }

    @staticmethod
    def error_body(error: ApiError) -> dict[str, Any]:
        # Built in answer.py, where the stream's error event finds it too.
        return error_envelope(error)
