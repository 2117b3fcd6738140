from django.contrib import admin, messages
from django.db import transaction
from django.template.response import TemplateResponse
from django.utils import timezone

from gateway.keys import api_key_revoke, new_key_material
from gateway.models import ApiKey, BlockedTerm, ModerationEvent
from gateway.moderation.hooks.blocklist import blocklist_snapshot


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are listed by their visible prefix only; the full key is shown once, on the page after 'Add'."""

    list_display = ("prefix", "name", "user", "status", "created_at", "last_used_at", "expires_at")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    fields = ("user", "name", "expires_at", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke_keys",)

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        if key.is_revoked:
            return "revoked"
        return "expired" if not key.is_usable(timezone.now()) else "active"

    def get_readonly_fields(self, request, obj=None):
        # The owner of an existing key never changes: a key belongs to whom it was issued to.
        return (*self.readonly_fields, "user") if obj else self.readonly_fields

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if not change:
            raw_key, stored = new_key_material()
            for field, value in stored.items():
                setattr(obj, field, value)
            request.pulse_new_api_key = raw_key
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None):
        # The key is rendered into this one response and stored nowhere (no message, no session).
        context = {
            **self.admin_site.each_context(request),
            "key": obj,
            "raw_key": request.pulse_new_api_key,
            "opts": self.opts,
            "title": "API key created",
        }
        return TemplateResponse(request, "admin/gateway/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request, queryset) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(BlockedTerm)
class BlockedTermAdmin(admin.ModelAdmin):
    """The moderation blocklist. Every worker picks up a change within PULSE_LOCAL_CACHE_SECONDS."""

    list_display = ("pattern", "category", "is_regex", "whole_word", "case_insensitive", "enabled", "updated_at")
    list_filter = ("category", "enabled", "is_regex", "whole_word")
    list_editable = ("enabled",)
    search_fields = ("pattern", "category")
    fields = ("pattern", "is_regex", "whole_word", "case_insensitive", "category", "enabled")
    actions = ("enable_terms", "disable_terms")

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        count = queryset.update(enabled=enabled)  # update() sends no save signal: tell the workers here
        transaction.on_commit(blocklist_snapshot.bump)
        self.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {count} term(s).", messages.SUCCESS)

    @admin.action(description="Enable selected terms")
    def enable_terms(self, request, queryset) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected terms")
    def disable_terms(self, request, queryset) -> None:
        self._set_enabled(request, queryset, False)


@admin.register(ModerationEvent)
class ModerationEventAdmin(admin.ModelAdmin):
    """What moderation blocked or redacted, and why: a record, read-only."""

    list_display = (
        "created_at",
        "action",
        "category",
        "hook",
        "reason",
        "route",
        "user",
        "key_prefix",
        "param",
        "request_id",
    )
    list_filter = ("category", "hook", "action", "created_at")
    date_hierarchy = "created_at"
    search_fields = ("request_id", "user__username", "route", "reason")
    list_select_related = ("user", "api_key")
    show_full_result_count = False  # no COUNT(*) of the whole table on every page

    @admin.display(description="API key")
    def key_prefix(self, event: ModerationEvent) -> str:
        return f"{event.api_key.prefix}…" if event.api_key else ""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
