"""Domain errors: what went wrong in the domain's words, with no HTTP in them.

Services (budgets, moderation, the pipeline) raise these; the API layer
(gateway.errors.as_api_error) maps each to a status and the error envelope.
"""

from __future__ import annotations

# The one code for "the content policy refused this": Pulse's moderation, a provider's refusal,
# a provider's blocked prompt.
CONTENT_POLICY_VIOLATION = "content_policy_violation"


class DomainError(Exception):
    """A failure the client should hear about; `code` is the envelope's code."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class QuotaExceeded(DomainError):
    """The request could take the user past a monthly cap; retrying will not help until the
    period turns or an admin raises the cap."""

    code = "quota_exceeded"
