"""Any change to providers or routes reaches every worker's routing table."""

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from providers.models import ModelRoute, Provider, RouteFallback
from providers.routing import bump_routing_version


def _bump(**kwargs: Any) -> None:
    transaction.on_commit(bump_routing_version)


for model in (Provider, ModelRoute, RouteFallback):
    post_save.connect(_bump, sender=model, dispatch_uid=f"routing-save-{model.__name__}")
    post_delete.connect(_bump, sender=model, dispatch_uid=f"routing-delete-{model.__name__}")
m2m_changed.connect(_bump, sender=ModelRoute.fallbacks.through, dispatch_uid="routing-m2m")
