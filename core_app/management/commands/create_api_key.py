"""python manage.py create_api_key --name NAME: prints a new API key."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core_app.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it. The key is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Who or what the key is for.")
        parser.add_argument(
            "--quiet", action="store_true", help="Print only the key (for scripts)."
        )

    def handle(self, *args: Any, name: str, quiet: bool, **options: Any) -> None:
        api_key, raw_key = api_key_create(name=name)
        if quiet:
            self.stdout.write(raw_key)
            return
        self.stdout.write(f"Created API key '{api_key.name}'. Store it now; it is not shown again:")
        self.stdout.write(raw_key)
        self.stdout.write("Send it as 'Authorization: Bearer <key>' (or 'X-API-Key: <key>').")
