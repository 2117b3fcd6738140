"""Coalescing concurrent calls into batches, for round trips that cost per call rather than per item:
the ledger's group commit (one commit for the rows that finish together) and the rate limiter's
script (one Redis call for the requests that arrive together).

A call that arrives while nothing is in flight starts a batch at once (with whatever else arrives
in the same turn of the event loop): one request at a time costs what a single call does. Calls
that arrive while a batch is in flight wait for it to end, then go together as the next batch. No
timer: batching comes from the time a round trip takes, never from waiting for company. One batch
is in flight at a time, so a burst of thousands of requests holds one connection, not thousands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Send = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    """send(items) makes one round trip for the batch and returns each item's outcome in order: its
    result, or the exception that item's caller gets. An exception out of send fails the whole batch."""

    def __init__(self, send: Send[T, R], *, max_batch: int) -> None:
        self.send = send
        self.max_batch = max_batch
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.sending: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """submit() without the coroutine: the item is queued now, and the future is its outcome. A
        caller that shields its wait (asyncio.shield) shields a future this way, with no task to make."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.pending.append((item, future))
        if self.sending is None:
            # A task of its own: a caller that is canceled (its client left) must not cancel the
            # round trip of everyone else's items, nor its own, which is queued and will be sent
            # (its future is canceled with it, and the outcome is then dropped).
            self.sending = loop.create_task(self._drain())
            self.sending.add_done_callback(self._stopped)
        return future

    async def idle(self) -> None:
        """Wait until every item submitted so far has been sent (shutdown drains)."""
        if self.sending is not None:
            await asyncio.wait([self.sending])

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                await self._send(batch)
        finally:
            self.sending = None  # at once: the next submit starts a new sender

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """The sender ended. If it was canceled (the loop is closing; perhaps before it even started) or
        failed, whoever still waits gets that, rather than waiting forever."""
        if self.sending is task:
            self.sending = None
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if error is not None and self.sending is None:  # (a new sender owns what is pending now)
            waiting, self.pending = self.pending, []
            _settle([future for _, future in waiting], error)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        futures = [future for _, future in batch]
        try:
            outcomes = await self.send([item for item, _ in batch])
        except BaseException as exc:
            _settle(futures, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if len(outcomes) != len(batch):
            _settle(futures, RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}"))
            return
        for future, outcome in zip(futures, outcomes, strict=True):
            if future.done():  # its caller is gone: the item was sent all the same
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _settle(futures: list[asyncio.Future[R]], error: BaseException) -> None:
    """Fail every future still waiting with error (cancel them, if it is a cancellation)."""
    for future in futures:
        if future.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(error)
