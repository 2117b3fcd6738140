from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from gateway.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key for USERNAME (creating the user if needed); the key is the last line printed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument("--name", default="", help="a label for the key")

    def handle(self, *args, username: str, staff: bool, name: str, **options) -> None:
        User = get_user_model()
        lookup: dict[str, Any] = {User.USERNAME_FIELD: username}
        user, created = User.objects.get_or_create(defaults=None, **lookup)
        if created:
            user.set_unusable_password()  # API access only until an admin sets a password
            user.save(update_fields=["password"])
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        key, raw_key = api_key_create(user=user, name=name)
        self.stderr.write(
            f"{'Created' if created else 'Existing'} user {username!r}; "
            f"new key {key.prefix}… (shown once, store it now):"
        )
        self.stdout.write(raw_key)
