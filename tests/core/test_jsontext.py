"""core.jsontext.dumps writes everything json.dumps writes, the same values, compact."""

import json
from decimal import Decimal

import pytest

from core.jsontext import dumps


@pytest.mark.parametrize(
    "value",
    [
        {"model": "gpt-4o", "n": 1, "t": 0.5, "ok": True, "none": None, "text": "héllo ✓"},
        {"seed": 2**70, "negative": -(2**64)},  # beyond 64 bits: orjson refuses, the stdlib writes them
        {1: "a non-string key"},
        {"text": "a lone \ud800 surrogate"},
    ],
)
def test_dumps_writes_what_the_stdlib_writes(value):
    assert json.loads(dumps(value)) == json.loads(json.dumps(value))


def test_what_json_cannot_hold_is_still_refused():
    with pytest.raises(TypeError):
        dumps({"cost": Decimal("0.1")})
