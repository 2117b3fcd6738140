"""What every moderation hook shares: the verdict it returns, the base class, and the two
errors a request can end with (blocked: 400; no decision possible: 503).

A hook is any class named by a dotted path in MODERATION_HOOKS, instantiated once at
start-up without arguments. It implements `async check(text) -> Verdict`, or
`async check_many(texts) -> list[Verdict]` when one call can cover every text (a remote
API). A hook that cannot decide raises (HookUnavailable, or anything else): the pipeline
then lets the text through if the hook's `fail_open` is true, and answers 503
`moderation_unavailable` if not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from core.errors import CONTENT_POLICY_VIOLATION
from gateway.errors import ApiError

Action = Literal["allow", "block", "redact"]
ALLOW: Final = "allow"
BLOCK: Final = "block"
REDACT: Final = "redact"


@dataclass(frozen=True, slots=True)
class Verdict:
    """allow; block (category, reason); or redact (the transformed text, and what was redacted)."""

    action: Action
    category: str = ""
    reason: str = ""  # for the ModerationEvent and the log, never shown to the client
    text: str | None = None  # the redacted text

    @classmethod
    def block(cls, category: str, reason: str) -> Verdict:
        return cls(BLOCK, category, reason)

    @classmethod
    def redact(cls, text: str, category: str, reason: str) -> Verdict:
        return cls(REDACT, category, reason, text)


ALLOWED = Verdict(ALLOW)


class ModerationHook:
    """Base of the built-in hooks; operator hooks may subclass it or just match its shape."""

    name = ""  # in ModerationEvent.hook; the hook's dotted path when empty
    fail_open = False  # when the hook cannot decide: let the text through (True) or answer 503 (False)

    async def check(self, text: str) -> Verdict:
        raise NotImplementedError

    async def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        return [await self.check(text) for text in texts]


class HookUnavailable(Exception):
    """Raised by a hook that cannot decide (its backend is down, say)."""


class ContentBlocked(ApiError):
    """A hook blocked the request: 400 content_policy_violation naming the category."""

    status, type, code = 400, "invalid_request_error", CONTENT_POLICY_VIOLATION

    def __init__(self, *, category: str, hook: str, reason: str, param: str | None, answer: bool = False):
        what = "The answer was withheld" if answer else "The request was blocked"
        super().__init__(
            f"{what} by the content policy (category: {category}).", param=param, extra={"category": category}
        )
        self.category = category
        self.hook = hook
        self.reason = reason


class ModerationUnavailable(ApiError):
    """A fail-closed hook could not decide: 503, and no provider is called."""

    status, type, code = 503, "api_error", "moderation_unavailable"
