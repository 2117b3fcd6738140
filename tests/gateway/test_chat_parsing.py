"""The chat dialects' parsing on the hot path: DRF validates the fields a body sends; the shortcuts of
HotPathSerializer (shared fields, absent optional fields not visited) change no outcome."""

import pytest
from rest_framework import serializers

from gateway.chat_formats import ChatCompleteRequest, ChatCompletionsRequest

MESSAGES = [{"role": "user", "content": "hi"}]


def stock(hot: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The same serializer with DRF's own fields and field loop back in place."""
    drf = serializers.Serializer.__dict__
    overrides = {name: drf[name] for name in ("fields", "to_internal_value", "_writable_fields")}
    return type(f"Stock{hot.__name__}", (hot,), overrides)


BODIES = [
    {"model": "gpt-4o", "messages": MESSAGES},
    {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "max_tokens": 5, "temperature": None},
    {"model": "gpt-4o", "messages": MESSAGES, "n": 2, "stream_options": {"include_usage": True}, "store": True},
    {"messages": MESSAGES},  # a required field missing
    {"model": "gpt-4o"},
    {"model": "gpt-4o", "messages": MESSAGES, "temperature": 3},
    {"model": "gpt-4o", "messages": MESSAGES, "stop": ["a"] * 9},
    {"model": "gpt-4o", "messages": MESSAGES, "mystery": 1},
    {"model": "gpt-4o", "messages": MESSAGES, "tool_choice": "required"},  # no tools to require
    {"model": "gpt-4o", "messages": MESSAGES, "fallbacks": ["x"] * 9},
]


@pytest.mark.parametrize("hot", [ChatCompletionsRequest, ChatCompleteRequest])
@pytest.mark.parametrize("body", BODIES)
def test_hot_path_validation_matches_stock_drf(hot, body):
    fast, plain = hot(data=body), stock(hot)(data=body)
    assert fast.is_valid() == plain.is_valid()
    if plain.errors:
        assert fast.errors == plain.errors
    else:
        assert fast.validated_data == plain.validated_data
