"""Keep moderation state in step with the admin and with settings.

- A BlockedTerm saved or deleted bumps the blocklist's version once the change commits,
  so every worker reloads it within PULSE_LOCAL_CACHE_SECONDS.
- A MODERATION_* setting changed at run time (tests: override_settings) reloads the hooks,
  which read their settings when they are built.
"""

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from gateway.models import BlockedTerm
from gateway.moderation.hooks.blocklist import blocklist_snapshot, reset_blocklist
from gateway.moderation.hooks.openai_moderation import provider_snapshot
from gateway.moderation.registry import configure_hooks


def _blocklist_changed(**kwargs) -> None:
    transaction.on_commit(blocklist_snapshot.bump)


post_save.connect(_blocklist_changed, sender=BlockedTerm, dispatch_uid="moderation-blocklist-save")
post_delete.connect(_blocklist_changed, sender=BlockedTerm, dispatch_uid="moderation-blocklist-delete")


@receiver(setting_changed, dispatch_uid="moderation-settings")
def _settings_changed(setting: str, **kwargs) -> None:
    if not setting.startswith("MODERATION_"):
        return
    if setting == "MODERATION_BLOCKLIST":
        reset_blocklist()
    if setting == "MODERATION_OPENAI_PROVIDER":
        provider_snapshot.reset()
    configure_hooks()
