"""Content moderation: the hook pipeline every entry point runs before a provider is called.

    from gateway.moderation import moderate_chat, ContentBlocked
    call = await moderate_chat(call, route=route, principal=principal, request_id=request_id)

Hooks (MODERATION_HOOKS, dotted paths, in order) return a Verdict: allow, block(category,
reason) or redact(text). Built in: hooks.blocklist.BlocklistHook (admin-edited terms),
hooks.pii.PiiHook (e-mail, phone, card numbers) and hooks.openai_moderation.OpenAIModerationHook.
"""

from gateway.moderation.base import (
    ALLOWED,
    ContentBlocked,
    HookUnavailable,
    ModerationHook,
    ModerationUnavailable,
    Verdict,
)
from gateway.moderation.pipeline import moderate_answer, moderate_chat, moderate_texts
from gateway.moderation.registry import configure_hooks, load_hooks

__all__ = [
    "ALLOWED",
    "ContentBlocked",
    "HookUnavailable",
    "ModerationHook",
    "ModerationUnavailable",
    "Verdict",
    "configure_hooks",
    "load_hooks",
    "moderate_answer",
    "moderate_chat",
    "moderate_texts",
]
