"""The chat dialects' parsing on the hot path: DRF validates the fields a body sends; the shortcuts of
HotPathSerializer (shared fields, absent optional fields not visited, plain bodies taken at face
value) change no outcome."""

import random

import pytest
from rest_framework import serializers

from gateway.chat_formats import ChatCompleteRequest, ChatCompletionsRequest, validated

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


# --- the face-value path (HotPathSerializer.plainly_validated) ----------------------------------
FACE_VALUES: dict[str, list] = {
    "model": ["gpt-4o", "", " gpt-4o", "x" * 200, "x" * 201, "gpt\x00", "modèle", None, 4, True],
    "messages": [
        MESSAGES,
        [],
        None,
        "hi",
        [{"role": "user"}],
        [{"role": "system", "content": "be brief"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        [{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        [{"role": "user", "content": "hi", "name": "ann"}],
    ],
    "max_tokens": [1, 0, -3, 32, 10**12, 5.0, "5", True, None],
    "max_completion_tokens": [1, 0, 64, 7.0, "9", None],
    "temperature": [0, 2, 2.0001, -0.0, 1.5, float("nan"), float("inf"), "1", True, None, 3],
    "top_p": [0, 1, 1.01, 0.5, None, False],
    "stream": [True, False, "true", 1, None],
    "seed": [0, -5, 2**40, 1.0, "7", None],
    "user": ["", "u-1", " u", "x" * 256, "x" * 257, None, 5],
    "presence_penalty": [-2, 2, -2.5, 0.3, None],
    "frequency_penalty": [-2.0, 2.01, 1, None],
    "parallel_tool_calls": [True, False, None, "yes"],
    # Fields outside FAST_FIELDS, and strangers: always the serializer's.
    "n": [1, 2],
    "stop": ["x", None],
    "tool_choice": ["none", "auto"],
    "store": [True],
    "mystery": [1],
}


def random_bodies(seed: int, count: int) -> list:
    rng = random.Random(seed)
    names = list(FACE_VALUES)
    bodies: list = [None, [], "text"]
    for _ in range(count):
        body = {name: rng.choice(FACE_VALUES[name]) for name in rng.sample(names, rng.randint(0, 5))}
        if rng.random() < 0.8:
            body.setdefault("model", "gpt-4o")
            body.setdefault("messages", MESSAGES)
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("hot", [ChatCompletionsRequest, ChatCompleteRequest])
def test_taken_at_face_value_only_what_the_serializer_accepts_and_exactly_as_it_would(hot):
    taken = 0
    for body in random_bodies(seed=12, count=1500):
        face = hot.plainly_validated(body)
        serializer = hot(data=body)
        valid = serializer.is_valid()
        if face is not None:
            taken += 1
            assert valid, (body, serializer.errors)
            assert face == dict(serializer.validated_data), body
    assert taken > 200  # the path is taken for the plain bodies, not only declined


@pytest.mark.parametrize("hot", [ChatCompletionsRequest, ChatCompleteRequest])
def test_the_plain_bodies_clients_send_are_taken_at_face_value(hot):
    for body in (
        {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 32},
        {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "temperature": 0.2, "user": "u-1"},
    ):
        assert hot.plainly_validated(body) == dict(validated(hot(data=body)))
    assert hot.plainly_validated({"model": "gpt-4o", "messages": MESSAGES, "n": 1}) is None  # validate() reads n
