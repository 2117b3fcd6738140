"""The hooks in MODERATION_HOOKS, loaded once at start-up (GatewayConfig.ready).

Each dotted path names a hook class (instantiated without arguments) or a ready object.
A path that cannot be imported, or names something that is not a hook, stops start-up
with an ImproperlyConfigured that names it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from gateway.moderation.base import Verdict

CheckMany = Callable[[Sequence[str]], Awaitable[list[Verdict]]]


@dataclass(frozen=True)
class LoadedHook:
    name: str  # recorded in ModerationEvent.hook
    path: str
    check_many: CheckMany
    fail_open: bool


_hooks: list[LoadedHook] = []


def _check_many(hook: Any, path: str) -> CheckMany:
    if inspect.iscoroutinefunction(getattr(hook, "check_many", None)):
        return hook.check_many
    if inspect.iscoroutinefunction(getattr(hook, "check", None)):

        async def check_each(texts: Sequence[str]) -> list[Verdict]:
            return [await hook.check(text) for text in texts]

        return check_each
    raise ImproperlyConfigured(
        f"MODERATION_HOOKS: {path!r} is not a moderation hook: it needs "
        "`async def check(self, text) -> Verdict` or `async def check_many(self, texts)`"
    )


def load_hook(path: str) -> LoadedHook:
    try:
        target = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"MODERATION_HOOKS: cannot import {path!r}: {exc}") from exc
    try:
        hook = target() if inspect.isclass(target) else target
    except ImproperlyConfigured:
        raise
    except Exception as exc:
        raise ImproperlyConfigured(f"MODERATION_HOOKS: {path!r} failed to start: {exc!r}") from exc
    name = getattr(hook, "name", "") or path
    return LoadedHook(name, path, _check_many(hook, path), bool(getattr(hook, "fail_open", False)))


def load_hooks(paths: Sequence[str]) -> list[LoadedHook]:
    return [load_hook(path) for path in paths]


def configure_hooks(paths: Sequence[str] | None = None) -> list[LoadedHook]:
    """Load and install the hooks (MODERATION_HOOKS unless paths are given); returns them."""
    global _hooks
    _hooks = load_hooks(settings.MODERATION_HOOKS if paths is None else paths)
    return _hooks


def active_hooks() -> list[LoadedHook]:
    """The installed hooks; a reconfiguration installs a new list (a running request keeps its own)."""
    return _hooks
