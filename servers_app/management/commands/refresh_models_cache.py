"""python manage.py refresh_models_cache [--server ALIAS]"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core_app.errors import NotFound
from servers_app.models import Server
from servers_app.selectors import server_require
from servers_app.services import server_refresh_models


class Command(BaseCommand):
    help = "Refresh the cached checkpoints and LoRAs of every enabled server (or one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server", metavar="ALIAS", help="Only this server.")

    def handle(self, *args: Any, server: str | None, **options: Any) -> None:
        servers = Server.objects.filter(enabled=True)
        if server:
            try:
                server_require(alias=server)
            except NotFound as exc:
                raise CommandError(exc.message) from exc
            servers = Server.objects.filter(alias=server)
        total = servers.count()
        failed = 0
        for number, record in enumerate(servers, start=1):
            self.stdout.write(f"[{number}/{total}] {record.alias} ({record.api_url}) ...")
            result = server_refresh_models(server=record)
            if result.error:
                failed += 1
                self.stdout.write(
                    self.style.ERROR(f"  unreachable, kept the last list (stale): {result.error}")
                )
                continue
            self.stdout.write(
                self.style.SUCCESS(
                    f"  {result.checkpoints} checkpoints, {result.loras} LoRAs "
                    f"(+{result.added} -{result.removed} ~{result.updated})"
                )
            )
        summary = f"Refreshed {total - failed} of {total} server(s)."
        if failed:
            raise CommandError(f"{summary} {failed} could not be reached.")
        self.stdout.write(summary)
