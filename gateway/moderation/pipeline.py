"""The moderation pipeline: every request's prompt passes through `moderate_prompt` (called by
the request pipeline, gateway.pipeline) after authentication and limits, before any provider
is called.

Hooks run in MODERATION_HOOKS order, each on the texts as the previous ones left them
(a redaction is what later hooks and the provider see). The first block ends the request:
its ModerationEvent is written, then ContentBlocked (400) is raised. When nothing is
blocked or redacted, nothing is written and no thread is used: the built-in hooks work
from in-memory copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

from core.principal import Principal
from gateway.errors import ApiError
from gateway.moderation.base import BLOCK, REDACT, ContentBlocked, ModerationUnavailable, Verdict
from gateway.moderation.registry import LoadedHook, active_hooks
from providers.routing import Route

logger = logging.getLogger(__name__)
ANSWER_PARAM = "answer"  # ModerationEvent.param of a provider's answer checked after the call


@dataclass(frozen=True)
class Finding:
    hook: str
    verdict: Verdict
    param: str
    text: str  # what the event may keep: the text blocked, or the redacted result (never the removed PII)


@dataclass(frozen=True)
class Context:
    route: Route | None
    principal: Principal | None
    request_id: str


def moderation_applies(route: Route | None) -> bool:
    return (route is None or route.moderation_enabled) and bool(active_hooks())


def _events(findings: list[Finding], context: Context) -> None:
    from gateway.models import ModerationEvent

    store = settings.MODERATION_STORE_PROMPTS
    principal = context.principal
    ModerationEvent.objects.bulk_create(
        [
            ModerationEvent(
                request_id=context.request_id,
                user_id=principal.user_id if principal else None,
                api_key_id=principal.key_id if principal else None,
                route=context.route.name if context.route else "",
                hook=f.hook,
                category=f.verdict.category,
                reason=f.verdict.reason,
                action="blocked" if f.verdict.action == BLOCK else "redacted",
                param=f.param,
                prompt=f.text if store else "",
            )
            for f in findings
        ]
    )


async def record_findings(findings: list[Finding], context: Context) -> None:
    """Write the events; a failed write is logged, never a reason to let a blocked prompt through."""
    try:
        await database_sync_to_async(_events)(findings, context)
    except Exception:
        logger.exception("could not record %d moderation event(s) for request %s", len(findings), context.request_id)


async def _verdicts(hook: LoadedHook, texts: list[str]) -> list[Verdict] | None:
    """The hook's verdicts; None when it could not decide and fails open."""
    try:
        verdicts = await hook.check_many(texts)
        if len(verdicts) != len(texts):
            raise ValueError(f"{len(verdicts)} verdicts for {len(texts)} texts")
        return verdicts
    except ApiError:
        raise
    except Exception as exc:
        if hook.fail_open:
            logger.warning("moderation hook %s could not decide, letting the request through: %s", hook.name, exc)
            return None
        logger.error("moderation hook %s could not decide: %s", hook.name, exc)
        raise ModerationUnavailable(
            "Content moderation is unavailable right now; the request was not sent to any provider. Try again shortly."
        ) from exc


async def run_hooks(
    texts: Sequence[str], params: Sequence[str], context: Context, *, answer: bool = False
) -> list[str]:
    if len(params) != len(texts):
        raise ValueError("moderation needs one param name per text")
    current, findings = list(texts), []
    for hook in active_hooks():
        for index, verdict in enumerate(await _verdicts(hook, current) or ()):
            if verdict.action == BLOCK:
                findings.append(Finding(hook.name, verdict, params[index], current[index]))
                await record_findings(findings, context)
                logger.info("moderation: %s blocked %s (%s)", hook.name, params[index], verdict.category)
                raise ContentBlocked(
                    category=verdict.category,
                    hook=hook.name,
                    reason=verdict.reason,
                    param=None if answer else params[index],
                    answer=answer,
                )
            if verdict.action == REDACT and verdict.text is not None:
                current[index] = verdict.text
                findings.append(Finding(hook.name, verdict, params[index], verdict.text))
    if findings:
        await record_findings(findings, context)
    return current


async def moderate_texts(
    texts: Sequence[str], *, route: Route | None, principal: Principal | None, request_id: str, params: Sequence[str]
) -> list[str]:
    """The texts as the provider may see them (redacted where a hook redacted), or ContentBlocked
    (400, recorded) or ModerationUnavailable (503). params name each text in the request
    (e.g. "prompt", "messages.2.content"): the blocked one is the error's param. No hook runs
    for a route with moderation_enabled off; route=None (no route known) is moderated."""
    if not moderation_applies(route):
        return list(texts)
    return await run_hooks(texts, params, Context(route, principal, request_id))


class Prompted(Protocol):
    """Anything with a prompt to screen: the pipeline's operations (chat, image, video)."""

    def prompt(self) -> tuple[list[str], Sequence[str]]: ...

    def with_prompt(self, texts: list[str]) -> Self: ...


P = TypeVar("P", bound=Prompted)


async def moderate_prompt(operation: P, *, route: Route | None, principal: Principal | None, request_id: str) -> P:
    """The operation unchanged (the same object), or with its prompt texts redacted; raises like
    moderate_texts."""
    texts, params = operation.prompt()
    moderated = await moderate_texts(texts, route=route, principal=principal, request_id=request_id, params=params)
    return operation.with_prompt(moderated)


async def moderate_answer(text: str, *, route: Route | None, principal: Principal | None, request_id: str) -> str:
    """A provider's answer through the same hooks (MODERATION_CHECK_RESPONSES); a block withholds it."""
    if not moderation_applies(route):
        return text
    return (await run_hooks([text], (ANSWER_PARAM,), Context(route, principal, request_id), answer=True))[0]
