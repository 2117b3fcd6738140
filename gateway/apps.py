from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from gateway import signals  # noqa: F401 - connects cache invalidation
        from gateway.moderation import signals as moderation_signals  # noqa: F401 - blocklist invalidation
        from gateway.moderation.registry import configure_hooks

        configure_hooks()  # a bad MODERATION_HOOKS path stops start-up here, naming the path
