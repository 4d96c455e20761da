"""The Civitai simulator in the foreground, as `manage.py civitai_simulator` runs it.

The command only declares its arguments; what they mean is here: `simulator_from_options`
builds a `CivitaiSimulator` (the demo catalogue plus the local files offered, keys, login
rule, transfer rate), `serve` starts it, lists what it offers and serves until SIGINT or
SIGTERM. Plain Python like the rest of the simulator (no Django): a refused option or a port
that cannot be bound is a `SimulatorStartError` whose message is for the person at the
terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from integrations.simulator_http import SimulatorStartError, run_until_signalled

from .catalog import MODEL_TYPE_NAMES, SimFile, SimModel, SimVersion, demo_catalog
from .server import CivitaiSimulator, SimulatorConfig

__all__ = [
    "Output",
    "local_file_model",
    "parse_file_spec",
    "serve",
    "simulator_from_options",
]

# A local file offered with `--file` number n gets ids above the demo catalogue's.
_MODEL_ID_BASE = 1000
_VERSION_ID_BASE = 10000
_FILE_ID_BASE = 20000


class Output(Protocol):
    """Where the command's lines go (a Django command's `self.stdout`, `sys.stdout`)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def parse_file_spec(spec: str) -> tuple[str, str]:
    """`--file PATH[:TYPE]` as (path, model type); the type is Checkpoint unless given."""
    path, _, model_type = spec.partition(":")
    model_type = model_type or "Checkpoint"
    if model_type not in MODEL_TYPE_NAMES:
        raise SimulatorStartError(f"Unknown model type {model_type!r}.")
    if not os.path.isfile(path):
        raise SimulatorStartError(f"No such file: {path}")
    return path, model_type


def local_file_model(path: str, model_type: str, index: int) -> SimModel:
    """The model offering local file number `index` (from 1): model id 1000+n, version id
    10000+n. Reads the whole file to hash it."""
    name = os.path.basename(path)
    sim_file = SimFile(_FILE_ID_BASE + index, name, path=path, primary=True)
    version = SimVersion(_VERSION_ID_BASE + index, "v1", [sim_file])
    return SimModel(_MODEL_ID_BASE + index, os.path.splitext(name)[0], model_type, [version])


def simulator_from_options(
    *,
    files: Iterable[str],
    api_keys: Iterable[str],
    require_login: bool,
    bytes_per_second: float | None,
    host: str,
    port: int,
    out: Output,
) -> CivitaiSimulator:
    """A simulator, not started yet: the demo catalogue plus a model per `files` entry
    (`PATH[:TYPE]`; each is hashed now, which `out` is told as it may take a while)."""
    catalog = demo_catalog()
    for index, spec in enumerate(files, start=1):
        path, model_type = parse_file_spec(spec)
        out.write(f"Hashing {path} ...\n")
        catalog.models.append(local_file_model(path, model_type, index))
    sim = CivitaiSimulator(
        SimulatorConfig(
            catalog=catalog,
            api_keys=set(api_keys),
            unauthenticated_download=not require_login,
            host=host,
            port=port,
        )
    )
    sim.faults.bytes_per_second = bytes_per_second
    return sim


def serve(sim: CivitaiSimulator, *, out: Output) -> None:
    """Start `sim`, write the line saying where it is (`Civitai simulator on <url> ...`, which
    scripts and tests read) and what it offers, and serve until SIGINT or SIGTERM; then stop
    it."""
    config = sim.config
    try:
        sim.start()
    except OSError as exc:
        raise SimulatorStartError(f"Cannot listen on {config.host}:{config.port}: {exc}") from exc

    def announce() -> None:
        out.write(f"Civitai simulator on {sim.url}  (set CIVITAI_BASE_URL={sim.url})\n")
        for model in config.catalog.models:
            for version in model.versions:
                out.write(
                    f"  {model.type:<16} model {model.id:<5} version {version.id:<6} "
                    f"{version.files[0].name}\n"
                )
        for image in config.catalog.images:
            label = "with" if image.meta else "without"
            out.write(f"  image {image.id} ({label} generation data)\n")
        out.flush()

    run_until_signalled(sim, on_ready=announce)
    out.write("Civitai simulator stopped.\n")
