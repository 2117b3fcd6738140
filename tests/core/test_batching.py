"""The Coalescer: calls that arrive together share a send; every caller gets its own outcome, and no
caller waits forever, whatever the send does."""

import asyncio

import pytest

from core.batching import Coalescer


async def test_calls_arriving_during_a_send_go_together_and_each_gets_its_outcome():
    sizes: list[int] = []

    async def send(items):
        sizes.append(len(items))
        await asyncio.sleep(0.01)
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    coalescer = Coalescer(send, max_batch=4)
    results = await asyncio.gather(*(coalescer.submit(n) for n in range(7)), return_exceptions=True)

    assert results[:3] == [0, 10, 20] and isinstance(results[3], ValueError) and results[4:] == [40, 50, 60]
    assert sizes == [4, 3]  # everything submitted in one turn starts together, max_batch at a time


async def test_a_send_that_fails_or_miscounts_fails_its_whole_batch():
    async def broken(items):
        raise ConnectionError("down")

    async def miscounted(items):
        return [1]

    for send, error in ((broken, ConnectionError), (miscounted, RuntimeError)):
        coalescer = Coalescer(send, max_batch=8)
        results = await asyncio.gather(*(coalescer.submit(n) for n in range(3)), return_exceptions=True)
        assert all(isinstance(result, error) for result in results)


async def test_callers_are_not_left_waiting_when_the_sender_is_canceled():
    async def slow(items):
        await asyncio.sleep(10)
        return items

    coalescer = Coalescer(slow, max_batch=1)
    callers = [asyncio.ensure_future(coalescer.submit(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert coalescer.sending is not None
    coalescer.sending.cancel()  # the loop is closing, say

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.gather(*callers), timeout=1)
    assert all(caller.cancelled() for caller in callers)
