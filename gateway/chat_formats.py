"""The two chat dialects: Pulse's own (/v1/chat/complete) and OpenAI's (/v1/chat/completions).

Each parses a JSON body into one ChatCall (validated by DRF serializers, which also
document the endpoints in the OpenAPI schema) and renders answers, stream chunks
and mid-stream errors in its own format.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from billing.pricing import usd_text
from gateway.errors import ApiError, InvalidRequest, first_validation_error
from providers.clients.base import ChatDelta, ChatMessage, ChatRequest, ChatResult, Usage


@dataclass(frozen=True)
class ChatCall:
    """A validated chat request, whichever dialect it came in."""

    model: str
    request: ChatRequest
    stream: bool = False
    fallbacks: tuple[str, ...] = ()
    include_usage: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answered:
    """What a renderer needs to know about who answered and what it cost."""

    request_id: str
    model: str  # the public model name the client asked for
    provider: str
    upstream_model: str
    created: int


class HotPathSerializer(serializers.Serializer):
    """A serializer for the chat hot path, whose fields are built once per class.

    DRF deep-copies every declared field for each new serializer instance: about
    175 µs of a chat request here. These serializers only validate (no instance, no
    context, nothing kept on the fields) and run on the event loop's one thread, so
    one bound set of fields serves every request.
    """

    _shared_fields: ClassVar[BindingDict]

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        if "_shared_fields" not in cls.__dict__:
            fields = BindingDict(self)
            for name, field in self.get_fields().items():
                fields[name] = field
            cls._shared_fields = fields
        return cls._shared_fields


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        param, message = first_validation_error(serializer.errors)
        raise InvalidRequest(f"{param}: {message}" if param else message, code="invalid_value", param=param)
    return serializer.validated_data


def _temperature() -> serializers.FloatField:
    return serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)


def _top_p() -> serializers.FloatField:
    return serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)


def _require_a_turn(messages: list[dict]) -> list[dict]:
    if all(m["role"] == "system" for m in messages):
        raise serializers.ValidationError("at least one user or assistant message is required")
    return messages


# ---------------------------------------------------------------- Pulse dialect
class PulseMessage(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class ChatCompleteRequest(HotPathSerializer):
    model = serializers.CharField(max_length=200)
    messages = PulseMessage(many=True, allow_empty=False)
    max_tokens = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    temperature = _temperature()
    top_p = _top_p()
    stop = serializers.ListField(child=serializers.CharField(), max_length=4, required=False)
    stream = serializers.BooleanField(required=False, default=False)
    fallbacks = serializers.ListField(child=serializers.CharField(max_length=200), max_length=5, required=False)
    metadata = serializers.DictField(required=False)

    def validate_messages(self, messages: list[dict]) -> list[dict]:
        return _require_a_turn(messages)


class PulseUsage(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatCompleteResponse(serializers.Serializer):
    id = serializers.CharField()
    model = serializers.CharField()
    provider = serializers.CharField()
    message = PulseMessage()
    finish_reason = serializers.CharField()
    usage = PulseUsage()
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=8, coerce_to_string=True)


def _chat_request(data: dict, messages: list[ChatMessage], max_tokens: int | None, stop: list[str]) -> ChatRequest:
    return ChatRequest(tuple(messages), max_tokens, data.get("temperature"), data.get("top_p"), tuple(stop))


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


class Dialect:
    """A chat wire format: parses a request body into a ChatCall and renders answers, stream
    chunks and mid-stream errors. Every method is a class or static method: dialects hold no state."""

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        raise NotImplementedError

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def stream_start(cls, answered: Answered, include_usage: bool) -> bytes:
        return b""

    @classmethod
    def stream_delta(cls, delta: ChatDelta, answered: Answered, include_usage: bool) -> bytes:
        raise NotImplementedError

    @classmethod
    def stream_end(
        cls, finish_reason: str, usage: Usage, cost_usd: Decimal, answered: Answered, include_usage: bool
    ) -> bytes:
        raise NotImplementedError

    @classmethod
    def stream_error(cls, error: ApiError) -> bytes:
        raise NotImplementedError


class PulseDialect(Dialect):
    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = validated(ChatCompleteRequest(data=payload))
        messages = [ChatMessage(m["role"], m["content"]) for m in data["messages"]]
        return ChatCall(
            data["model"],
            _chat_request(data, messages, data.get("max_tokens"), data.get("stop", [])),
            data["stream"],
            tuple(data.get("fallbacks", [])),
            True,
            data.get("metadata", {}),
        )

    @staticmethod
    def usage(usage: Usage) -> dict:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        }

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        return {
            "id": answered.request_id,
            "model": answered.model,
            "provider": answered.provider,
            "message": {"role": "assistant", "content": result.content},
            "finish_reason": result.finish_reason,
            "usage": cls.usage(usage),
            "cost_usd": usd_text(cost_usd),
        }

    # Stream: `event: delta` frames, then one `event: done` (or `event: error`).
    @classmethod
    def stream_delta(cls, delta: ChatDelta, answered: Answered, include_usage: bool) -> bytes:
        return sse({"delta": delta.content}, "delta") if delta.content else b""

    @classmethod
    def stream_end(
        cls, finish_reason: str, usage: Usage, cost_usd: Decimal, answered: Answered, include_usage: bool
    ) -> bytes:
        return sse(
            {
                "id": answered.request_id,
                "model": answered.model,
                "provider": answered.provider,
                "finish_reason": finish_reason,
                "usage": cls.usage(usage),
                "cost_usd": usd_text(cost_usd),
            },
            "done",
        )

    @classmethod
    def stream_error(cls, error: ApiError) -> bytes:
        return sse(error.body(), "error")


# ---------------------------------------------------------------- OpenAI dialect
class OpenAIContent(serializers.Field):
    """A message's content: a string, or a list of text parts (the only kind Pulse routes today)."""

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(isinstance(p, dict) for p in data):
            if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in data):
                raise serializers.ValidationError("only text content parts are supported")
            return "".join(p["text"] for p in data)
        raise serializers.ValidationError("must be a string or a list of text parts")

    def to_representation(self, value: str) -> str:
        return value


class OpenAIMessage(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant"])
    content = OpenAIContent()


class StreamOptions(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class ChatCompletionsRequest(HotPathSerializer):
    model = serializers.CharField(max_length=200)
    messages = OpenAIMessage(many=True, allow_empty=False)
    max_tokens = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    max_completion_tokens = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    temperature = _temperature()
    top_p = _top_p()
    stop = serializers.JSONField(required=False, allow_null=True)
    n = serializers.IntegerField(min_value=1, max_value=1, required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = StreamOptions(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True)
    metadata = serializers.DictField(required=False, allow_null=True)

    # Features Pulse cannot honour yet are refused rather than silently ignored.
    UNSUPPORTED = (
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "logprobs",
        "audio",
        "modalities",
        "prediction",
    )

    def validate(self, attrs: dict) -> dict:
        for name in self.UNSUPPORTED:
            if self.initial_data.get(name) not in (None, False):
                raise serializers.ValidationError({name: "is not supported by this gateway yet"})
        return attrs

    def validate_messages(self, messages: list[dict]) -> list[dict]:
        return _require_a_turn(messages)

    def validate_stop(self, stop: Any) -> list[str]:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise serializers.ValidationError("must be a string or a list of up to 4 strings")
        return stops


class OpenAIDialect(Dialect):
    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = validated(ChatCompletionsRequest(data=payload))
        messages = [
            ChatMessage("system" if m["role"] == "developer" else m["role"], m["content"]) for m in data["messages"]
        ]
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        return ChatCall(
            data["model"],
            _chat_request(data, messages, max_tokens, data.get("stop") or []),
            data["stream"],
            (),
            include_usage,
            data.get("metadata") or {},
        )

    @staticmethod
    def usage(usage: Usage) -> dict:
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        }

    @staticmethod
    def _envelope(answered: Answered, obj: str) -> dict:
        return {
            "id": f"chatcmpl-{answered.request_id}",
            "object": obj,
            "created": answered.created,
            "model": answered.model,
        }

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        message = {"role": "assistant", "content": result.content, "refusal": None}
        return {
            **cls._envelope(answered, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": cls.usage(usage),
        }

    @classmethod
    def _chunk(cls, answered: Answered, delta: dict, finish_reason: str | None, include_usage: bool) -> bytes:
        chunk = {
            **cls._envelope(answered, "chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            chunk["usage"] = None
        return sse(chunk)

    @classmethod
    def stream_start(cls, answered: Answered, include_usage: bool) -> bytes:
        return cls._chunk(answered, {"role": "assistant", "content": ""}, None, include_usage)

    @classmethod
    def stream_delta(cls, delta: ChatDelta, answered: Answered, include_usage: bool) -> bytes:
        return cls._chunk(answered, {"content": delta.content}, None, include_usage) if delta.content else b""

    @classmethod
    def stream_end(
        cls, finish_reason: str, usage: Usage, cost_usd: Decimal, answered: Answered, include_usage: bool
    ) -> bytes:
        end = cls._chunk(answered, {}, finish_reason, include_usage)
        if include_usage:
            end += sse({**cls._envelope(answered, "chat.completion.chunk"), "choices": [], "usage": cls.usage(usage)})
        return end + sse("[DONE]")

    @classmethod
    def stream_error(cls, error: ApiError) -> bytes:
        # A data payload with an "error" key: the OpenAI SDKs raise it as an APIError.
        return sse(error.body())


def now_created() -> int:
    return int(time.time())
