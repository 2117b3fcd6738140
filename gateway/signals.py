"""Keep the API-key caches honest when keys or their owners change."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from billing.budget import budget_resync
from billing.models import UserLimits
from gateway.auth import forget_api_key
from gateway.models import ApiKey


@receiver(post_save, sender=ApiKey)
def _key_saved(sender, instance: ApiKey, **kwargs) -> None:
    revoked = not instance.is_usable()
    transaction.on_commit(lambda: forget_api_key(instance.key_hash, revoked=revoked))


@receiver(post_delete, sender=ApiKey)
def _key_deleted(sender, instance: ApiKey, **kwargs) -> None:
    transaction.on_commit(lambda: forget_api_key(instance.key_hash, revoked=True))


def _forget_keys_of(user_id: int, *, revoked: bool) -> None:
    hashes = list(ApiKey.objects.filter(user_id=user_id).values_list("key_hash", flat=True))

    def forget() -> None:
        for key_hash in hashes:
            forget_api_key(key_hash, revoked=revoked)

    transaction.on_commit(forget)


@receiver(post_save, sender=get_user_model())
def _user_saved(sender, instance, created: bool, **kwargs) -> None:
    if not created:
        _forget_keys_of(instance.pk, revoked=not instance.is_active)


@receiver(post_save, sender=UserLimits)
@receiver(post_delete, sender=UserLimits)
def _limits_changed(sender, instance: UserLimits, **kwargs) -> None:
    """Rate limits and caps travel in the cached principal: reload it. The budget row is recounted
    from the ledger, which it may have missed while the user had no caps."""
    _forget_keys_of(instance.user_id, revoked=False)
    transaction.on_commit(lambda: budget_resync(instance.user_id))
