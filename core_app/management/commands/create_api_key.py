"""python manage.py create_api_key --name NAME --user USER [--scope client|admin]: prints a
new API key of USER (created if it does not exist)."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core_app.models import KeyScope
from core_app.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key of a user (created, without a password, if it does not exist) and "
        "print it. The key is shown only this once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Who or what the key is for.")
        parser.add_argument(
            "--user",
            required=True,
            help="The user whose key it is: the jobs it submits are theirs.",
        )
        parser.add_argument(
            "--scope",
            choices=KeyScope.values,
            default=KeyScope.CLIENT,
            help="client: the user's own work, servers and models read-only (the default). "
            "admin: everything.",
        )
        parser.add_argument(
            "--quiet", action="store_true", help="Print only the key (for scripts)."
        )

    def handle(
        self, *args: Any, name: str, user: str, scope: str, quiet: bool, **options: Any
    ) -> None:
        username = user.strip()
        if not username:
            raise CommandError("--user must name a user.")
        owner, created = get_user_model().objects.get_or_create(
            username=username, defaults={"password": "!"}
        )
        if not owner.is_active:
            raise CommandError(f"User '{username}' is deactivated.")
        api_key, raw_key = api_key_create(name=name, user=owner, scope=scope)
        if quiet:
            self.stdout.write(raw_key)
            return
        if created:
            self.stdout.write(f"Created user '{username}'.")
        self.stdout.write(
            f"Created {scope} API key '{api_key.name}' of '{username}'. "
            "Store it now; it is not shown again:"
        )
        self.stdout.write(raw_key)
        self.stdout.write("Send it as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>').")
