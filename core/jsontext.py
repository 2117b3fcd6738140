"""Writing JSON on the hot path (answers, stream events, upstream request bodies).

orjson writes several times faster than the standard library; what it refuses (integers beyond 64
bits, non-string keys, lone surrogates) the standard library writes instead, so nothing that
json.dumps would write is refused. Reading stays with json.loads: orjson reads integers beyond 64 bits
as floats, silently changing a client's or a provider's numbers.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact JSON text, UTF-8. orjson's bytes keep its whole initial buffer (about 4 KB, measured) however
    short the text: fine for what is sent at once, but copy what is kept for long (providers.http does)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # not a type JSON has (Decimal, say) raises here too, as with json.dumps
        return json.dumps(value, separators=(",", ":")).encode()
