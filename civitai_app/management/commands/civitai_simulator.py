"""python manage.py civitai_simulator: a fake civitai.com, to try MobileSD's Civitai features
offline (image recipes, model downloads with resume and verification)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.civitai.simulator import (
    CivitaiSimulator,
    SimFile,
    SimModel,
    SimulatorConfig,
    SimVersion,
    demo_catalog,
)
from integrations.civitai.simulator.catalog import MODEL_TYPE_NAMES

logger = logging.getLogger(__name__)


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
        catalog = demo_catalog()
        for index, spec in enumerate(options["file"], start=1):
            path, _, model_type = spec.partition(":")
            model_type = model_type or "Checkpoint"
            if model_type not in MODEL_TYPE_NAMES:
                raise CommandError(f"Unknown model type {model_type!r}.")
            if not os.path.isfile(path):
                raise CommandError(f"No such file: {path}")
            self.stdout.write(f"Hashing {path} ...")
            sim_file = SimFile(20000 + index, os.path.basename(path), path=path, primary=True)
            version = SimVersion(10000 + index, "v1", [sim_file])
            catalog.models.append(
                SimModel(1000 + index, os.path.splitext(sim_file.name)[0], model_type, [version])
            )
        config = SimulatorConfig(
            catalog=catalog,
            api_keys=set(options["api_key"]),
            unauthenticated_download=not options["require_login"],
            host=options["host"],
            port=options["port"],
        )
        sim = CivitaiSimulator(config)
        sim.faults.bytes_per_second = options.get("bytes_per_second")
        try:
            sim.start()
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from exc
        self.stdout.write(f"Civitai simulator on {sim.url}  (set CIVITAI_BASE_URL={sim.url})")
        for model in catalog.models:
            for version in model.versions:
                self.stdout.write(
                    f"  {model.type:<16} model {model.id:<5} version {version.id:<6} "
                    f"{version.files[0].name}"
                )
        for image in catalog.images:
            label = "with" if image.meta else "without"
            self.stdout.write(f"  image {image.id} ({label} generation data)")
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        stop.wait()
        sim.stop()
        self.stdout.write("Civitai simulator stopped.")
