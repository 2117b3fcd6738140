"""Providers and model routes: data edited in the admin, read by workers as a cached snapshot."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models

from core.modality import Modality
from providers.clients.base import ProviderConfig
from providers.secrets import decrypt_secret, encrypt_secret


class Provider(models.Model):
    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (vLLM, Ollama, …)"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Google Gemini"
        REPLICATE = "replicate", "Replicate"

    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    base_url = models.URLField(
        max_length=500,
        help_text="As the official SDK's base URL: OpenAI's "
        "includes /v1; Anthropic's, Gemini's and Replicate's do not.",
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    connect_timeout_s = models.FloatField(default=5.0)
    read_timeout_s = models.FloatField(default=120.0, help_text="Longest wait for the next bytes of an answer.")
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return decrypt_secret(self.api_key_encrypted)

    @api_key.setter
    def api_key(self, value: str) -> None:
        self.api_key_encrypted = encrypt_secret(value)

    def config(self) -> ProviderConfig:
        """The provider as the clients see it: key decrypted, base URL without a trailing slash."""
        return ProviderConfig(
            self.name,
            self.kind,
            self.base_url.rstrip("/"),
            self.api_key,
            self.connect_timeout_s,
            self.read_timeout_s,
        )


def usd_price(help_text: str = "") -> models.DecimalField[Decimal | None, Decimal | None]:
    """A price in USD, exact to a millionth of a dollar; blank (null) when not set."""
    return models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True, help_text=help_text)


class ModelRoute(models.Model):
    """A public model name (or a pattern like `gpt-*`) and where it goes."""

    name = models.CharField(
        max_length=200, unique=True, help_text="The model name clients send, or a pattern with one '*' (e.g. gpt-*)."
    )
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="routes")
    upstream_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The provider's model name. Blank: the requested name, without a 'provider:' prefix.",
    )
    modality = models.CharField(max_length=10, choices=Modality.choices, default=Modality.CHAT)
    priority = models.IntegerField(default=100, help_text="Among patterns matching a name, lowest first.")
    fallbacks = models.ManyToManyField("self", through="RouteFallback", symmetrical=False, related_name="+", blank=True)
    default_max_tokens = models.PositiveIntegerField(
        default=4096, help_text="Used when a request gives no max_tokens (Anthropic requires one)."
    )
    # Blank means "not priced": such a route refuses requests rather than bill them at $0.
    # A free route (a self-hosted model, say) says so with an explicit 0.
    input_usd_per_mtok = usd_price("USD per million input tokens. Blank: not priced.")
    output_usd_per_mtok = usd_price("USD per million output tokens. Blank: not priced.")
    # The token kinds providers price apart from plain input. Blank: billed at the input price
    # (the provider's own list price should be set wherever it differs).
    cached_input_usd_per_mtok = usd_price(
        "USD per million input tokens read from the provider's prompt cache. Blank: the input price."
    )
    cache_write_usd_per_mtok = usd_price(
        "USD per million input tokens written to the prompt cache (Anthropic: 5-minute). Blank: the input price."
    )
    cache_write_1h_usd_per_mtok = usd_price(
        "USD per million input tokens written to Anthropic's 1-hour cache. Blank: the input price."
    )
    usd_per_image = usd_price()
    usd_per_video_second = usd_price()
    prices_from_table = models.BooleanField(
        default=False,
        help_text="The prices come from the shipped price table (providers/prices.toml; for "
        "OPENAI_COMPATIBLE_MODELS, the environment) and sync_providers keeps them current. Editing any "
        "price clears this, so sync_providers leaves the route's prices alone; tick it to hand them back.",
    )
    moderation_enabled = models.BooleanField(
        default=True, help_text="Run the moderation hooks on prompts to this route before any provider sees them."
    )
    fallback_on_refusal = models.BooleanField(
        default=False, help_text="When the provider refuses on content-policy grounds, try the next candidate."
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name

    def clean(self) -> None:
        if self.name.count("*") > 1:
            raise ValidationError({"name": "A pattern may hold one '*' only."})


class RouteFallback(models.Model):
    """One step of a route's ordered fallback chain."""

    route = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="fallback_steps")
    fallback = models.ForeignKey(ModelRoute, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["route", "fallback"], name="unique_fallback_step")]

    def __str__(self) -> str:
        return f"{self.route_id} -> {self.fallback_id} (#{self.position})"

    def clean(self) -> None:
        if self.fallback_id and self.fallback_id == self.route_id:
            raise ValidationError({"fallback": "A route cannot fall back to itself."})
        if self.fallback_id and self.fallback.is_pattern:
            raise ValidationError({"fallback": "Fall back to a route with an exact model name, not a pattern."})
