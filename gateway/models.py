from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from gateway.moderation.patterns import pattern_error

API_KEY_PREFIX = "pulse-"
VISIBLE_PREFIX_LENGTH = len(API_KEY_PREFIX) + 8


def hash_api_key(raw_key: str) -> str:
    """SHA-256 of the key. Keys are 256 random bits, so a fast hash is safe (no brute force)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    """A client credential. The key itself is shown once at creation and never stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=32, db_index=True, editable=False, help_text="The first characters of the key, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return not self.is_revoked and (self.expires_at is None or self.expires_at > now)


class BlockedTerm(models.Model):
    """One entry of the moderation blocklist: a literal term or a regular expression.

    Matching runs on normalised text (NFKC, format characters such as zero-width spaces
    removed, and casefolded when case_insensitive), so full-width letters or a zero-width
    space inside a word do not slip through. Rows seeded from MODERATION_BLOCKLIST are
    only ever added, never updated: edits made here win. To retire a seeded term, disable
    it (a deleted one is added again while the variable still lists it).
    """

    pattern = models.CharField(max_length=500, help_text="A word or phrase, or a Python regular expression.")
    is_regex = models.BooleanField(default=False, help_text="Treat the pattern as a Python regular expression.")
    whole_word = models.BooleanField(
        default=True, help_text="Match only where the pattern is not part of a longer word ('kill' not in 'skill')."
    )
    case_insensitive = models.BooleanField(default=True)
    category = models.CharField(
        max_length=100, default="blocklist", help_text="Reported to the client in the content_policy_violation error."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["category", "pattern"]
        constraints = [models.UniqueConstraint(fields=["pattern", "is_regex"], name="unique_blocked_term")]

    def __str__(self) -> str:
        return f"{'/' + self.pattern + '/' if self.is_regex else self.pattern} ({self.category})"

    def clean(self) -> None:
        if error := pattern_error(self.pattern, is_regex=self.is_regex):
            raise ValidationError({"pattern": error})


class ModerationEvent(models.Model):
    """A prompt (or answer) that a moderation hook blocked or redacted."""

    class Action(models.TextChoices):
        BLOCKED = "blocked"
        REDACTED = "redacted"

    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    route = models.CharField(max_length=200, blank=True)
    hook = models.CharField(max_length=200, db_index=True)
    category = models.CharField(max_length=100, db_index=True)
    reason = models.TextField()
    action = models.CharField(max_length=10, choices=Action.choices)
    param = models.CharField(
        max_length=100, blank=True, help_text="Which part of the request, e.g. messages.2.content."
    )
    prompt = models.TextField(blank=True, help_text="Kept only when MODERATION_STORE_PROMPTS is on.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.category} by {self.hook} ({self.request_id})"
