"""The two chat dialects: Pulse's own (/v1/chat/complete) and OpenAI's (/v1/chat/completions).

Each parses a JSON body into one ChatCall (validated by DRF serializers, which also
document the endpoints in the OpenAPI schema) and renders answers, stream chunks
and mid-stream errors in its own format.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from django.core import validators as django_validators
from rest_framework import serializers
from rest_framework import validators as drf_validators
from rest_framework.fields import empty
from rest_framework.utils.serializer_helpers import BindingDict

from billing.pricing import usd_text
from core.jsontext import dumps
from gateway.chat_parts import Messages, ResponseFormatField, ToolChoiceField, Tools, check_tool_choice
from gateway.errors import ApiError, InvalidRequest, first_validation_error
from providers.clients.base import ChatDelta, ChatRequest, ChatResult, ToolCall, ToolCallDelta, Usage


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
    _shared_writable: ClassVar[list[serializers.Field]]
    _sent: Any = None

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        if "_shared_fields" not in cls.__dict__:
            fields = BindingDict(self)
            for name, field in self.get_fields().items():
                if field.read_only:  # _read_only_defaults relies on there being none
                    raise TypeError(f"{cls.__name__}.{name}: a hot-path serializer takes no read-only fields")
                fields[name] = field
            cls._shared_fields = fields
        return cls._shared_fields

    def to_internal_value(self, data: Any) -> Any:
        self._sent = data  # a Mapping whenever DRF goes on to read the fields
        return super().to_internal_value(data)

    @property
    def _writable_fields(self) -> list[serializers.Field]:
        """The fields the body sends, and those that matter when absent (required, or with a default).
        DRF would visit every other field only to find it missing and skip it (about 2 µs each, and a
        chat request leaves out most of its twenty-odd fields)."""
        cls = type(self)
        if "_shared_writable" not in cls.__dict__:
            cls._shared_writable = list(self.fields.values())
        sent = self._sent
        return [
            field
            for field in cls._shared_writable
            if field.field_name in sent or field.required or field.default is not empty
        ]

    def _read_only_defaults(self) -> dict[str, Any]:
        """DRF walks every field on each request to collect read-only fields' defaults, for the
        serializer's validators; a hot-path serializer has no read-only field (see fields), so none."""
        return {}

    # Fields that no validate() rule reads: a body sending only these, with values taken at face value
    # (see _face_value), needs nothing of the serializer but each field's own conversion.
    FAST_FIELDS: ClassVar[frozenset[str]] = frozenset()
    _face_values: ClassVar[dict[str, Callable[[Any], Any]]]
    # Each declared field in order, with what plainly_validated asks of it: (name, required, has a
    # default, the field), read once per class rather than from the field on every body.
    _declared: ClassVar[list[tuple[str, bool, bool, serializers.Field]]]

    @classmethod
    def validated_payload(cls, payload: Any) -> dict[str, Any]:
        """validated_data for the payload, or the ValidationError: a plain body at face value, any other
        through the serializer."""
        return cls.plainly_validated(payload) or validated(cls(data=payload))

    @classmethod
    def plainly_validated(cls, data: Any) -> dict[str, Any] | None:
        """validated_data for the plainest bodies, without DRF's machinery around each field (about
        40 µs of a chat request): every key one of FAST_FIELDS, every value one its field takes at
        face value. Otherwise None, and the caller runs the serializer, which gives the same answer
        or the error (tests/gateway/test_chat_parsing.py holds the two paths to the same results)."""
        if "_face_values" not in cls.__dict__:
            fields = cls().fields
            cls._declared = [(str(f.field_name), f.required, f.default is not empty, f) for f in fields.values()]
            cls._face_values = {name: _face_value(fields[name]) for name in cls.FAST_FIELDS}
        face_values = cls._face_values
        if type(data) is not dict or not data.keys() <= face_values.keys():
            return None
        validated: dict[str, Any] = {}
        for name, required, has_default, declared in cls._declared:
            if name in data:
                value = face_values[name](data[name])
                if value is _UNSURE:
                    return None
                validated[name] = value
            elif required:
                return None  # the serializer says which
            elif has_default:
                validated[name] = declared.get_default()
        return validated


_UNSURE: Any = object()
# The validators DRF gives the plain fields below for their own arguments (lengths, bounds, no NUL or
# lone surrogate): a field with any other (its own validators=) is never taken at face value.
_PLAIN_VALIDATORS = (
    django_validators.MaxLengthValidator,
    django_validators.MinLengthValidator,
    django_validators.MaxValueValidator,
    django_validators.MinValueValidator,
    django_validators.ProhibitNullCharactersValidator,
    drf_validators.ProhibitSurrogateCharactersValidator,
)


def _face_value(field: serializers.Field) -> Callable[[Any], Any]:
    """What field.run_validation(value) returns, for the values where that is plain to see; _UNSURE
    for any other (a string for a number, a bool for a number, a value DRF would trim or refuse).
    Exact DRF types only: a subclass (EmailField...) adds rules of its own. Pulse's own fields (in the
    gateway package) are their to_internal_value, which raises for what they refuse."""
    if not all(isinstance(validator, _PLAIN_VALIDATORS) for validator in field.validators):
        return _never
    if type(field).__module__.startswith("gateway."):
        return _own_field(field)
    accept = _PLAIN_KINDS.get(type(field))
    if accept is None:
        return _never

    def checked(value: Any) -> Any:
        if value is None:
            return None if field.allow_null else _UNSURE
        return accept(field, value)

    return checked


def _never(value: Any) -> Any:
    return _UNSURE


def _within(field: Any, value: float) -> bool:
    low, high = field.min_value, field.max_value
    return (low is None or value >= low) and (high is None or value <= high)


def _boolean(field: Any, value: Any) -> Any:
    return value if type(value) is bool else _UNSURE


def _integer(field: Any, value: Any) -> Any:
    return value if type(value) is int and _within(field, value) else _UNSURE


def _float(field: Any, value: Any) -> Any:
    plain = type(value) in (int, float) and math.isfinite(value) and _within(field, value)
    return float(value) if plain else _UNSURE


def _text(field: Any, value: Any) -> Any:
    if type(value) is not str or not value.isascii() or "\x00" in value:
        return _UNSURE  # DRF would turn a number into text; NUL and lone surrogates it refuses
    if (field.trim_whitespace and value != value.strip()) or (value == "" and not field.allow_blank):
        return _UNSURE
    low, high = field.min_length, field.max_length
    return value if (low is None or len(value) >= low) and (high is None or len(value) <= high) else _UNSURE


_PLAIN_KINDS: dict[type, Callable[[Any, Any], Any]] = {
    serializers.BooleanField: _boolean,
    serializers.IntegerField: _integer,
    serializers.FloatField: _float,
    serializers.CharField: _text,
}


def _own_field(field: serializers.Field) -> Callable[[Any], Any]:
    def converted(value: Any) -> Any:
        if value is None:
            return _UNSURE  # DRF's null handling comes first: leave it to the serializer
        try:
            return field.to_internal_value(value)
        except serializers.ValidationError:
            return _UNSURE  # refused: the serializer words the error

    return converted


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        param, message = first_validation_error(serializer.errors)
        raise InvalidRequest(f"{param}: {message}" if param else message, code="invalid_value", param=param)
    return serializer.validated_data


def _temperature() -> serializers.FloatField:
    return serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)


def _top_p() -> serializers.FloatField:
    return serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)


def _penalty() -> serializers.FloatField:
    return serializers.FloatField(min_value=-2, max_value=2, required=False, allow_null=True)


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")


class ChatRequestFields(HotPathSerializer):
    """What both chat formats take: the conversation (text, images, tool calls and results), tools,
    structured output and the sampling settings. Unknown fields are refused, naming the field."""

    model = serializers.CharField(max_length=200)
    messages = Messages()
    max_tokens = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    temperature = _temperature()
    top_p = _top_p()
    stream = serializers.BooleanField(required=False, default=False)
    tools = Tools(required=False)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    response_format = ResponseFormatField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    reasoning_effort = serializers.ChoiceField(choices=REASONING_EFFORTS, required=False, allow_null=True)
    presence_penalty = _penalty()
    frequency_penalty = _penalty()
    metadata = serializers.DictField(required=False, allow_null=True)

    # What validate() reads: tools and tool_choice here, n and the logprobs pair in the OpenAI dialect.
    FAST_FIELDS = frozenset(
        {"model", "messages", "max_tokens", "temperature", "top_p", "stream", "seed", "user"}
        | {"presence_penalty", "frequency_penalty", "parallel_tool_calls"}
    )

    # Sent by SDKs, and about the caller's own account at OpenAI rather than the answer: accepted
    # and not passed on (Pulse's account is the one upstream).
    IGNORED: ClassVar[frozenset[str]] = frozenset({"store", "service_tier", "prompt_cache_key", "safety_identifier"})

    def validate(self, attrs: dict) -> dict:
        known = set(self.fields) | self.IGNORED
        for name in self.initial_data:
            if name not in known:
                raise serializers.ValidationError({name: "is not a field Pulse knows (check its spelling)"})
        check_tool_choice(attrs.get("tools", ()), attrs.get("tool_choice"))
        return attrs


class ChatCompleteRequest(ChatRequestFields):
    stop = serializers.ListField(child=serializers.CharField(), max_length=4, required=False)
    fallbacks = serializers.ListField(child=serializers.CharField(max_length=200), max_length=5, required=False)


class PulseUsage(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()


class PulseToolCall(serializers.Serializer):
    class Function(serializers.Serializer):
        name = serializers.CharField()
        arguments = serializers.CharField(help_text="JSON text")

    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = Function()


class PulseAnswerMessage(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_null=True)
    tool_calls = PulseToolCall(many=True, required=False)


class ChatCompleteResponse(serializers.Serializer):
    id = serializers.CharField()
    model = serializers.CharField()
    provider = serializers.CharField()
    message = PulseAnswerMessage()
    finish_reason = serializers.CharField()
    usage = PulseUsage()
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=8, coerce_to_string=True)


def chat_request(data: dict, max_tokens: int | None, stop: list[str], **more: Any) -> ChatRequest:
    """The normalised request from validated fields both formats share."""
    return ChatRequest(
        messages=data["messages"],
        max_tokens=max_tokens,
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        stop=tuple(stop),
        tools=data.get("tools", ()),
        tool_choice=data.get("tool_choice"),
        parallel_tool_calls=data.get("parallel_tool_calls"),
        response_format=data.get("response_format"),
        seed=data.get("seed"),
        user=data.get("user") or None,
        reasoning_effort=data.get("reasoning_effort"),
        presence_penalty=data.get("presence_penalty"),
        frequency_penalty=data.get("frequency_penalty"),
        **more,
    )


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def tool_delta_json(delta: ToolCallDelta) -> dict[str, Any]:
    """A streamed piece of a call, as OpenAI's chunks carry it: id, type and name on the first piece only."""
    piece: dict[str, Any] = {"index": delta.index}
    if delta.id is not None:
        piece["id"], piece["type"] = delta.id, "function"
    function: dict[str, Any] = {"arguments": delta.arguments}
    if delta.name is not None:
        function["name"] = delta.name
    piece["function"] = function
    return piece


def answer_message(content: str, tool_calls: tuple[ToolCall, ...]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = [tool_call_json(call) for call in tool_calls]
    return message


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data.encode() if isinstance(data, str) else dumps(data)
    return (f"event: {event}\n" if event else "").encode() + b"data: " + payload + b"\n\n"


class StreamRenderer:
    """Renders one stream in a dialect: the bytes before, for each delta, at the end, and for a
    mid-stream error. One per stream, so a dialect whose events need numbering keeps its count here."""

    def __init__(self, answered: Answered, include_usage: bool):
        self.answered, self.include_usage = answered, include_usage

    def start(self) -> bytes:
        return b""

    def delta(self, delta: ChatDelta) -> bytes:
        raise NotImplementedError

    def end(self, finish_reason: str, usage: Usage, cost_usd: Decimal) -> bytes:
        raise NotImplementedError

    def error(self, error: ApiError) -> bytes:
        raise NotImplementedError


class Dialect:
    """A chat wire format: parses a request body into a ChatCall and renders answers, streams and
    errors. Parsing and answers are class or static methods: a dialect holds no state."""

    renderer: ClassVar[type[StreamRenderer]]

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        raise NotImplementedError

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def error_body(error: ApiError) -> dict[str, Any]:
        """The error envelope as this dialect's clients read it."""
        return error.body()


class PulseStream(StreamRenderer):
    """`event: delta` frames (text), `event: tool_call` frames (pieces of calls), then one
    `event: done` (or `event: error`)."""

    def delta(self, delta: ChatDelta) -> bytes:
        frames = sse({"delta": delta.content}, "delta") if delta.content else b""
        for piece in delta.tool_calls:
            frames += sse(tool_delta_json(piece), "tool_call")
        return frames

    def end(self, finish_reason: str, usage: Usage, cost_usd: Decimal) -> bytes:
        answered = self.answered
        return sse(
            {
                "id": answered.request_id,
                "model": answered.model,
                "provider": answered.provider,
                "finish_reason": finish_reason,
                "usage": PulseDialect.usage(usage),
                "cost_usd": usd_text(cost_usd),
            },
            "done",
        )

    def error(self, error: ApiError) -> bytes:
        return sse(error.body(), "error")


class PulseDialect(Dialect):
    renderer = PulseStream

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = ChatCompleteRequest.validated_payload(payload)
        return ChatCall(
            data["model"],
            chat_request(data, data.get("max_tokens"), data.get("stop", [])),
            data["stream"],
            tuple(data.get("fallbacks", [])),
            True,
            data.get("metadata") or {},
        )

    @staticmethod
    def usage(usage: Usage) -> dict:
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        }

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        return {
            "id": answered.request_id,
            "model": answered.model,
            "provider": answered.provider,
            "message": answer_message(result.content, result.tool_calls),
            "finish_reason": result.finish_reason,
            "usage": cls.usage(usage),
            "cost_usd": usd_text(cost_usd),
        }


# ---------------------------------------------------------------- OpenAI dialect
class StreamOptions(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class ChatCompletionsRequest(ChatRequestFields):
    max_completion_tokens = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    stop = serializers.JSONField(required=False, allow_null=True)
    n = serializers.IntegerField(min_value=1, max_value=16, required=False, allow_null=True)
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    top_logprobs = serializers.IntegerField(min_value=0, max_value=20, required=False, allow_null=True)
    stream_options = StreamOptions(required=False, allow_null=True)
    FAST_FIELDS = ChatRequestFields.FAST_FIELDS | {"max_completion_tokens"}

    # Features Pulse cannot honour are refused rather than silently ignored.
    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        "functions",
        "function_call",
        "logit_bias",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
    )
    IGNORED = ChatRequestFields.IGNORED | {"verbosity"}

    def validate(self, attrs: dict) -> dict:
        for name in self.UNSUPPORTED:
            if self.initial_data.get(name) not in (None, False):
                raise serializers.ValidationError({name: "is not supported by this gateway"})
        attrs = super().validate(attrs)
        if (attrs.get("n") or 1) > 1 and attrs.get("stream"):
            raise serializers.ValidationError({"n": "more than one choice cannot be streamed through Pulse"})
        if attrs.get("top_logprobs") is not None and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": "needs logprobs: true"})
        return attrs

    def validate_stop(self, stop: Any) -> list[str]:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            raise serializers.ValidationError("must be a string or a list of up to 4 strings")
        return stops


class OpenAIStream(StreamRenderer):
    """`data:` chunks, the first with the role; `data: [DONE]` at the end (usage just before, if asked)."""

    def _envelope(self) -> dict[str, Any]:
        return OpenAIDialect.envelope(self.answered, "chat.completion.chunk")

    def _chunk(self, delta: dict, finish_reason: str | None, logprobs: Any = None) -> bytes:
        chunk = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def delta(self, delta: ChatDelta) -> bytes:
        piece: dict[str, Any] = {}
        if delta.content:
            piece["content"] = delta.content
        if delta.tool_calls:
            piece["tool_calls"] = [tool_delta_json(call) for call in delta.tool_calls]
        return self._chunk(piece, None, delta.logprobs) if piece or delta.logprobs else b""

    def end(self, finish_reason: str, usage: Usage, cost_usd: Decimal) -> bytes:
        end = self._chunk({}, finish_reason)
        if self.include_usage:
            end += sse({**self._envelope(), "choices": [], "usage": OpenAIDialect.usage(usage)})
        return end + sse("[DONE]")

    def error(self, error: ApiError) -> bytes:
        # A data payload with an "error" key: the OpenAI SDKs raise it as an APIError.
        return sse(error.body())


class OpenAIDialect(Dialect):
    renderer = OpenAIStream

    @staticmethod
    def parse(payload: Any) -> ChatCall:
        data = ChatCompletionsRequest.validated_payload(payload)
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        request = chat_request(
            data,
            max_tokens,
            data.get("stop") or [],
            n=data.get("n") or 1,
            logprobs=bool(data.get("logprobs")),
            top_logprobs=data.get("top_logprobs"),
        )
        return ChatCall(data["model"], request, data["stream"], (), include_usage, data.get("metadata") or {})

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
    def envelope(answered: Answered, obj: str) -> dict:
        return {
            "id": f"chatcmpl-{answered.request_id}",
            "object": obj,
            "created": answered.created,
            "model": answered.model,
        }

    @staticmethod
    def choice(index: int, content: str, finish_reason: str, tool_calls: tuple[ToolCall, ...], logprobs: Any) -> dict:
        message = answer_message(content, tool_calls) | {"refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}

    @classmethod
    def answer(cls, result: ChatResult, usage: Usage, answered: Answered, cost_usd: Decimal) -> dict[str, Any]:
        first = cls.choice(0, result.content, result.finish_reason, result.tool_calls, result.logprobs)
        more = [
            cls.choice(index, c.content, c.finish_reason, c.tool_calls, c.logprobs)
            for index, c in enumerate(result.more_choices, start=1)
        ]
        return {**cls.envelope(answered, "chat.completion"), "choices": [first, *more], "usage": cls.usage(usage)}


def now_created() -> int:
    return int(time.time())
