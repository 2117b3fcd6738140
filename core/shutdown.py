"""Shutdown hooks: modules that open per-loop resources (pools, sessions) register how to close
them, so the ASGI lifespan closes them all without importing any of them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

ShutdownHook = Callable[[], Awaitable[None]]
_hooks: list[ShutdownHook] = []
_drains: list[ShutdownHook] = []


def on_shutdown(hook: ShutdownHook) -> ShutdownHook:
    """Register hook (usable as a decorator); each runs once per worker shutdown, in order."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def drain_on_shutdown(hook: ShutdownHook) -> ShutdownHook:
    """Register a hook that finishes work in flight (queued ledger rows); drains run before any pool or
    session is closed, whatever the order the modules were imported in."""
    if hook not in _drains:
        _drains.append(hook)
    return hook


async def run_shutdown_hooks() -> None:
    """Run every drain, then every hook; one that fails is logged and does not stop the others."""
    for hook in [*_drains, *_hooks]:
        try:
            await hook()
        except Exception:
            logger.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))
