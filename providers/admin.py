from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from providers.models import ModelRoute, Provider, RouteFallback
from providers.price_table import PRICE_FIELDS
from providers.secrets import mask_secret


class ProviderForm(forms.ModelForm[Provider]):
    base_url = forms.URLField(
        max_length=500, assume_scheme="https", help_text=Provider._meta.get_field("base_url").help_text
    )
    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave blank to keep the current key.",
    )

    class Meta:
        model = Provider
        fields = ("name", "kind", "base_url", "api_key", "connect_timeout_s", "read_timeout_s", "enabled")

    def save(self, commit: bool = True) -> Provider:
        if self.cleaned_data.get("api_key"):
            self.instance.api_key = self.cleaned_data["api_key"]
        return super().save(commit)


def set_enabled(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any], enabled: bool
) -> None:
    # save() per row rather than update(): the save signal tells every worker's routing table.
    for obj in queryset:
        obj.enabled = enabled
        obj.save(update_fields=["enabled", "updated_at"])
    modeladmin.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {len(queryset)}.", messages.SUCCESS)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin[Provider]):
    form = ProviderForm
    list_display = ("name", "kind", "base_url", "api_key_status", "enabled", "updated_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url")
    readonly_fields = ("api_key_status",)
    actions = ("enable_providers", "disable_providers")

    @admin.display(description="API key")
    def api_key_status(self, provider: Provider) -> str:
        try:
            return f"set ({mask_secret(provider.api_key)})" if provider.api_key_encrypted else "not set"
        except ValueError as exc:
            return str(exc)

    @admin.action(description="Enable selected providers")
    def enable_providers(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        set_enabled(self, request, queryset, True)

    @admin.action(description="Disable selected providers")
    def disable_providers(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        set_enabled(self, request, queryset, False)


class RouteFallbackInline(admin.TabularInline[RouteFallback, ModelRoute]):
    model = RouteFallback
    fk_name = "route"
    extra = 0
    autocomplete_fields = ("fallback",)
    verbose_name = "fallback step"


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin[ModelRoute]):
    list_display = (
        "name",
        "provider",
        "upstream_model",
        "modality",
        "priority",
        "enabled",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "usd_per_image",
        "usd_per_video_second",
        "prices_from_table",
    )
    list_filter = ("modality", "enabled", "moderation_enabled", "prices_from_table", "provider")
    list_select_related = ("provider",)
    search_fields = ("name", "upstream_model")
    inlines = (RouteFallbackInline,)
    actions = ("enable_routes", "disable_routes")

    def save_model(
        self, request: HttpRequest, obj: ModelRoute, form: forms.ModelForm[ModelRoute], change: bool
    ) -> None:
        # An admin's price is a decision sync_providers must not undo: editing any price takes the
        # route's prices off the table, unless the same save ticks "prices from table" on purpose.
        if set(PRICE_FIELDS) & set(form.changed_data) and "prices_from_table" not in form.changed_data:
            obj.prices_from_table = False
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable selected routes")
    def enable_routes(self, request: HttpRequest, queryset: QuerySet[ModelRoute]) -> None:
        set_enabled(self, request, queryset, True)

    @admin.action(description="Disable selected routes")
    def disable_routes(self, request: HttpRequest, queryset: QuerySet[ModelRoute]) -> None:
        set_enabled(self, request, queryset, False)
