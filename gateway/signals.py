"""Keep the API-key caches honest when keys or their owners change."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from gateway.auth import forget_api_key
from gateway.models import ApiKey


@receiver(post_save, sender=ApiKey)
def _key_saved(sender, instance: ApiKey, **kwargs) -> None:
    revoked = not instance.is_usable()
    transaction.on_commit(lambda: forget_api_key(instance.key_hash, revoked=revoked))


@receiver(post_delete, sender=ApiKey)
def _key_deleted(sender, instance: ApiKey, **kwargs) -> None:
    transaction.on_commit(lambda: forget_api_key(instance.key_hash, revoked=True))


@receiver(post_save, sender=get_user_model())
def _user_saved(sender, instance, created: bool, **kwargs) -> None:
    if created:
        return
    hashes = list(ApiKey.objects.filter(user=instance).values_list("key_hash", flat=True))
    revoked = not instance.is_active

    def forget() -> None:
        for key_hash in hashes:
            forget_api_key(key_hash, revoked=revoked)

    transaction.on_commit(forget)
