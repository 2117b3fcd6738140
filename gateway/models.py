from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

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


class Job(models.Model):
    """An image or video generation, run by a Celery worker: created queued, then running, then one of
    succeeded / failed / canceled. Its ledger row has the job's id as request id, so it is written once
    however often a task is delivered; the row and the job's final state are written in one transaction
    (gateway.jobs.lifecycle)."""

    class Kind(models.TextChoices):
        IMAGE = "image"
        VIDEO = "video"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    model = models.CharField(max_length=200, help_text="The public model name the client asked for.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    request = models.JSONField(help_text="The validated request, with the prompt as moderation let it through.")
    fallbacks = models.JSONField(default=list, blank=True)
    endpoint = models.CharField(max_length=100)
    # Who served it: set once a provider accepted the job.
    route = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    progress = models.JSONField(
        default=dict, blank=True, help_text="A video's steps and the provider operation being polled."
    )
    attempts = models.JSONField(default=list, blank=True)
    hold = models.JSONField(null=True, blank=True, help_text="The budget held for the job until it ends.")
    error = models.JSONField(null=True, blank=True)
    images = models.PositiveIntegerField(default=0)
    video_seconds = models.DecimalField(max_digits=10, decimal_places=3, default=Decimal(0))
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    retries = models.PositiveSmallIntegerField(default=0, help_text="Whole retries after every provider failed.")
    # Exactly-once work on an at-least-once queue (gateway.jobs.lifecycle): the task message the job
    # waits for (others are stale duplicates), the worker's lease, and when the reaper steps in.
    ticket = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker holds the job until then; after, another may take over."
    )
    stale_after = models.DateTimeField(
        null=True, blank=True, help_text="No progress by then: the reaper hands the job to a worker again."
    )
    takeovers = models.PositiveSmallIntegerField(default=0, help_text="Times a worker took over from a lost one.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="job_user_newest"),
            models.Index(fields=["status", "stale_after"], name="job_status_stale"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class JobOutput(models.Model):
    """One generated file, copied into Pulse's storage (provider URLs expire)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(max_length=300)  # saved by gateway.jobs.storage, under jobs/<user>/<job>/
    content_type = models.CharField(max_length=100)
    bytes = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_job_output")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.index}"
