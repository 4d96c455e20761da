"""python manage.py forge_simulator: a fake Forge / A1111 server, to try MobileSD without a GPU."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.forge.simulator import FLAVOURS
from integrations.forge.simulator.cli import OPERATING_SYSTEMS, serve, simulator_from_options
from integrations.simulator_http import SimulatorStartError


class Command(BaseCommand):
    # Needs neither the database nor the project's models: start even on an unmigrated setup.
    requires_system_checks: list[str] = []
    help = (
        "Run a simulated Stable Diffusion WebUI Forge 2 / AUTOMATIC1111 1.10 server (HTTP API, "
        "FIFO queue, task progress, interrupt, model hashes, PNGs with infotext) until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port", type=int, help="Port to listen on (default 7860, 7861 with --nowebui)."
        )
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind.")
        parser.add_argument("--flavour", choices=FLAVOURS, default="forge-2")
        parser.add_argument(
            "--os",
            choices=OPERATING_SYSTEMS,
            default="linux",
            help="Server OS: decides the path separator in checkpoint names and file paths.",
        )
        parser.add_argument(
            "--models",
            help="Comma-separated checkpoint paths below models/Stable-diffusion, written with "
            "'/' (default: a small SDXL/Pony/SD1.5/Flux set).",
        )
        parser.add_argument("--loras", help="Comma-separated LoRA paths below models/Lora.")
        parser.add_argument(
            "--seconds-per-step", type=float, default=0.05, help="Sampling time per step."
        )
        parser.add_argument(
            "--switch-seconds", type=float, default=2.0, help="Time to load another checkpoint."
        )
        parser.add_argument("--auth", help="--api-auth credentials: user:pass[,user2:pass2].")
        parser.add_argument(
            "--nowebui", action="store_true", help="API-only mode: no /internal/* routes."
        )
        parser.add_argument(
            "--no-hashing", action="store_true", help="Never compute checkpoint hashes."
        )
        parser.add_argument(
            "--adetailer", action="store_true", help="With the ADetailer extension installed."
        )
        parser.add_argument(
            "--controlnet",
            choices=["yes", "no"],
            help="With the ControlNet extension (default: Forge's built-in one; none on A1111).",
        )
        parser.add_argument("--stall-seconds", type=float, default=0.0, help="Fault: stall jobs.")
        parser.add_argument(
            "--error-500-next", type=int, default=0, help="Fault: fail the next N jobs with 500."
        )
        parser.add_argument(
            "--drop-mid-job",
            type=int,
            default=0,
            help="Fault: drop the connection of the next N jobs halfway.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sim = simulator_from_options(
                flavour=options["flavour"],
                os=options["os"],
                models=options["models"],
                loras=options["loras"],
                seconds_per_step=options["seconds_per_step"],
                switch_seconds=options["switch_seconds"],
                auth=options["auth"],
                nowebui=options["nowebui"],
                no_hashing=options["no_hashing"],
                host=options["host"],
                port=options["port"],
                stall_seconds=options["stall_seconds"],
                error_500_next=options["error_500_next"],
                drop_mid_job=options["drop_mid_job"],
                adetailer=options["adetailer"],
                controlnet=None
                if options["controlnet"] is None
                else options["controlnet"] == "yes",
            )
            serve(sim, out=self.stdout, verbose=options["verbosity"] >= 2)
        except SimulatorStartError as exc:
            raise CommandError(str(exc)) from exc
