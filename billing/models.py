"""The usage ledger, per-user limits, and the budget counters that make caps race-free."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.modality import Modality


class UsageRecord(models.Model):
    """One billable event per request id, written exactly once and never updated (a correction is a new row)."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        BLOCKED = "blocked"
        CANCELED = "canceled"

    request_id = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey("gateway.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    endpoint = models.CharField(max_length=64, blank=True)
    route = models.CharField(max_length=200, blank=True, help_text="The route (name or pattern) that matched.")
    model = models.CharField(max_length=200, help_text="The public model name the client asked for.")
    provider = models.CharField(max_length=50, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    modality = models.CharField(max_length=10, choices=Modality.choices, default=Modality.CHAT)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0, help_text="Read from the prompt cache.")
    cache_write_input_tokens = models.PositiveIntegerField(
        default=0, help_text="Written to the prompt cache (Anthropic: its 5-minute cache)."
    )
    cache_write_1h_input_tokens = models.PositiveIntegerField(
        default=0, help_text="Written to Anthropic's 1-hour cache."
    )
    reasoning_tokens = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    video_seconds = models.DecimalField(max_digits=10, decimal_places=3, default=Decimal(0))
    usage_estimated = models.BooleanField(default=False, help_text="The provider reported no usage: estimated.")
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    status = models.CharField(max_length=10, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    attempts = models.JSONField(default=list, blank=True, help_text="Providers tried before the answer.")
    latency_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["model", "created_at"]),
            models.Index(fields=["provider", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.cost_usd}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValueError("The usage ledger is append-only: record a correction as a new row.")
        super().save(*args, **kwargs)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class UserLimits(models.Model):
    """Per-user overrides of the rate limit, and optional monthly caps (blank: no override / no cap)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="limits")
    rate_limit_requests = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per window; blank: RATE_LIMIT."
    )
    rate_limit_window_s = models.PositiveIntegerField(null=True, blank=True)
    monthly_spend_cap_usd = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    monthly_token_cap = models.PositiveBigIntegerField(null=True, blank=True)
    monthly_image_cap = models.PositiveIntegerField(null=True, blank=True)
    monthly_video_seconds_cap = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user limits"
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of user {self.user_id}"


class BudgetPeriod(models.Model):
    """What a user has spent and holds in reservations this period (calendar month, UTC).

    Only ever changed by conditional UPDATEs with F() expressions (billing/budget.py),
    so concurrent requests cannot overspend a cap. Money is kept as whole units of
    $0.00000001 (the ledger's precision) and video time as milliseconds: integer
    arithmetic is exact in every database, SQLite included.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    period = models.DateField(help_text="First day of the month.")
    spent_e8_usd = models.BigIntegerField(default=0, help_text="Spent, in units of $0.00000001.")
    reserved_e8_usd = models.BigIntegerField(default=0, help_text="Held by requests in flight, same unit.")
    tokens_used = models.BigIntegerField(default=0)
    tokens_reserved = models.BigIntegerField(default=0)
    images_used = models.IntegerField(default=0)
    images_reserved = models.IntegerField(default=0)
    video_ms_used = models.BigIntegerField(default=0)
    video_ms_reserved = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "period"], name="one_budget_row_per_period")]

    def __str__(self) -> str:
        return f"budget of user {self.user_id} for {self.period:%Y-%m}"

    @property
    def spent_usd(self) -> Decimal:
        return Decimal(self.spent_e8_usd).scaleb(-8)

    @property
    def reserved_usd(self) -> Decimal:
        return Decimal(self.reserved_e8_usd).scaleb(-8)
