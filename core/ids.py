"""Unique ids for the hot path, without a system call each.

uuid.uuid4() asks the kernel for 16 bytes every time (a getrandom call, about 2 µs with the UUID
object around it, twice per chat request: its request id and its rate-limit log entry). These ids
must only never repeat, not be unguessable, so they come from a generator seeded once from the OS;
a forked child reseeds (two workers forked from one parent would otherwise share the sequence).
Never use them for anything secret: API keys and tokens come from `secrets`.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()  # seeded from os.urandom
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_generator.seed)


def unique_hex() -> str:
    """32 hex digits: 128 random bits, as unlikely to repeat as a uuid4."""
    return f"{_generator.getrandbits(128):032x}"
