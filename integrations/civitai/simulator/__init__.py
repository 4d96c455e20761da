"""An in-process HTTP simulator of civitai.com (REST API v1, downloads, file storage).

Plain Python (stdlib HTTP server + Pillow); importable without Django settings.

    sim = CivitaiSimulator(SimulatorConfig(catalog=Catalog(models, images)))
    sim.start()          # sim.url -> "http://127.0.0.1:<port>"; set CIVITAI_BASE_URL to it
    ...
    sim.stop()

Behaviour follows shared/contracts/REFERENCE.md section C and the checklist of section E.
Modules: `server.py` (the routes, fault switches, request log), `catalog.py` (the data and
hashes), `cli.py` (what `manage.py civitai_simulator` runs).

Invariants: no Django and nothing of MobileSD's apps or of the Civitai client; its HTTP
plumbing is `integrations.simulator_http`, shared with the Forge simulator and nothing else
of it. Submodules import each other directly, never this package.
"""

from .catalog import (
    Catalog,
    SimFile,
    SimImage,
    SimModel,
    SimVersion,
    demo_catalog,
    file_hashes,
    safetensors_bytes,
)
from .server import CivitaiSimulator, Faults, RecordedRequest, SimulatorConfig

__all__ = [
    "Catalog",
    "CivitaiSimulator",
    "Faults",
    "RecordedRequest",
    "SimFile",
    "SimImage",
    "SimModel",
    "SimVersion",
    "SimulatorConfig",
    "demo_catalog",
    "file_hashes",
    "safetensors_bytes",
]
