"""python manage.py civitai_simulator: a fake civitai.com, to try MobileSD's Civitai features
offline (image recipes, model downloads with resume and verification)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.civitai.simulator.cli import serve, simulator_from_options
from integrations.simulator_http import SimulatorStartError


class Command(BaseCommand):
    # Needs neither the database nor the project's models: start even on an unmigrated setup.
    requires_system_checks: list[str] = []
    help = (
        "Run a simulated Civitai (REST API v1, downloads redirected to signed storage URLs with "
        "Range support, the documented error table) until Ctrl-C. Point CIVITAI_BASE_URL at it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=7870, help="Port (0 = any free one).")
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind.")
        parser.add_argument(
            "--file",
            action="append",
            default=[],
            metavar="PATH[:TYPE]",
            help="Also offer this local file as a model (TYPE: Checkpoint, LORA, "
            "TextualInversion, VAE, ...; default Checkpoint). Repeatable. Each gets model id "
            "1000+n and version id 10000+n.",
        )
        parser.add_argument(
            "--api-key", action="append", default=[], help="A key that signs a user in."
        )
        parser.add_argument(
            "--require-login",
            action="store_true",
            help="Refuse every anonymous download (401), as civitai.com may.",
        )
        parser.add_argument(
            "--bytes-per-second", type=float, help="Throttle file transfers (to watch progress)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sim = simulator_from_options(
                files=options["file"],
                api_keys=options["api_key"],
                require_login=options["require_login"],
                bytes_per_second=options.get("bytes_per_second"),
                host=options["host"],
                port=options["port"],
                out=self.stdout,
            )
            serve(sim, out=self.stdout)
        except SimulatorStartError as exc:
            raise CommandError(str(exc)) from exc
