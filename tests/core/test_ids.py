import os
import re

import pytest

from core.ids import unique_hex


def test_unique_hex_is_128_bits_in_hex():
    ids = {unique_hex() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids():
    # Without the reseed at fork, parent and child would draw the same sequence from then on.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write_end, unique_hex().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    from_child = os.read(read_end, 64).decode()
    os.close(read_end)
    assert re.fullmatch(r"[0-9a-f]{32}", from_child)
    assert from_child != unique_hex()
