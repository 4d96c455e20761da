"""python manage.py forge_simulator: a fake Forge / A1111 server, to try MobileSD without a GPU."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.forge.simulator import (
    DEFAULT_LORAS,
    DEFAULT_MODELS,
    FLAVOURS,
    ForgeSimulator,
    SimLora,
    SimModel,
    SimulatorConfig,
)

logger = logging.getLogger(__name__)


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _parse_auth(value: str | None) -> dict[str, str] | None:
    """`--api-auth` syntax: `user:pass[,user2:pass2]`."""
    if not value:
        return None
    users: dict[str, str] = {}
    for pair in _names(value):
        user, sep, password = pair.partition(":")
        if not sep or not user:
            raise CommandError(f"--auth expects user:password pairs, got {pair!r}")
        users[user] = password
    return users


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
            choices=("windows", "linux"),
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
        logging.getLogger("integrations.forge.simulator").setLevel(
            logging.DEBUG if options["verbosity"] >= 2 else logging.INFO
        )
        webui = not options["nowebui"]
        port = options["port"] if options["port"] is not None else (7860 if webui else 7861)
        try:
            config = SimulatorConfig(
                flavour=options["flavour"],
                path_separator="\\" if options["os"] == "windows" else "/",
                models=[SimModel(n) for n in _names(options["models"])]
                if options["models"]
                else list(DEFAULT_MODELS),
                loras=[SimLora(n) for n in _names(options["loras"])]
                if options["loras"]
                else list(DEFAULT_LORAS),
                seconds_per_step=options["seconds_per_step"],
                checkpoint_switch_seconds=options["switch_seconds"],
                auth_users=_parse_auth(options["auth"]),
                webui=webui,
                port=port,
                host=options["host"],
                no_hashing=options["no_hashing"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        sim = ForgeSimulator(config)
        sim.faults.stall_seconds = options["stall_seconds"]
        sim.faults.error_500_next = options["error_500_next"]
        sim.faults.drop_mid_job = options["drop_mid_job"]
        try:
            sim.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {config.host}:{port}: {exc}") from exc

        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        self.stdout.write(
            f"{config.flavour} simulator listening on {sim.url} "
            f"({'web UI' if webui else 'API only'}, {len(config.models)} checkpoints, "
            f"{config.seconds_per_step:g}s/step). Add it as a server in MobileSD; Ctrl-C stops."
        )
        self.stdout.flush()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()
            logger.info("simulator on port %s stopped", sim.port)
