from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from gateway.keys import api_key_revoke, new_key_material
from gateway.models import ApiKey


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
        context = {**self.admin_site.each_context(request), "key": obj,
                   "raw_key": request.pulse_new_api_key, "opts": self.opts, "title": "API key created"}
        return TemplateResponse(request, "admin/gateway/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request, queryset) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
