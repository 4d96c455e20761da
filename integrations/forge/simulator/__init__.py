"""An in-process HTTP simulator of Stable Diffusion WebUI Forge 2 / AUTOMATIC1111 1.10.

Plain Python (stdlib HTTP server + Pillow); importable without Django settings.

    sim = ForgeSimulator(SimulatorConfig(flavour="forge-2", path_separator="\\\\"))
    sim.start()          # sim.url -> "http://127.0.0.1:<port>"
    ...
    sim.stop()

Behaviour follows shared/contracts/REFERENCE.md (sections A, D, E). Modules, each depending
only on those after it: `cli.py` (what `manage.py forge_simulator` runs) -> `server.py` (HTTP,
connections, lifecycle invariants) -> `api.py` (routes, auth, endpoints; handed what it
needs, it never imports the server) -> `generation.py` (a txt2img/img2img job) ->
`extensions.py` (scripts, prompt styles, the extensions' lists), `runtime.py` (one process
lifetime), `disk.py` (what survives a restart), `validation.py`, `errors.py` (each
flavour's error bodies), `imaging.py`, `infotext.py`, `catalog.py`, `events.py`,
`faults.py` (fault injection), `config.py`.

Invariants: no Django and nothing of MobileSD's apps or of the Forge client; its HTTP
plumbing is `integrations.simulator_http`, shared with the Civitai simulator. Submodules
import each other directly, never this package, so there is no import circle through it.

`sim.events` records (each event also has `type`, `t` = time.monotonic(), `seq`):
  started/stopped/restarted {port}; refusing_connections/accepting_connections {port};
  <mode>_received {task_id, checkpoint, override_settings, styles, script_name, script_args,
                   alwayson_scripts}      mode = txt2img | img2img; queued, lock ticket taken
  <mode>_stalled {task_id, seconds}       `faults.stall_seconds` holds the lock
  <mode>_started {task_id}                the task is current (`active`)
  model_loading {task_id, name, previous, seconds} / model_loaded {task_id, title, name}
  checkpoint_override_ignored {task_id, requested}
  connection_dropped {task_id}            `faults.drop_mid_job`
  <mode>_finished {task_id, images, interrupted, dropped, seconds}
  <mode>_failed {task_id, status, body}   <mode>_aborted {task_id} (restart/stop)
  interrupt {task_id} / skip {task_id}    the task current at that moment (or None)
  options_set {options}; checkpoints_refreshed {count}; loras_refreshed {count}
"""

from .config import (
    DEFAULT_LORAS,
    DEFAULT_MODELS,
    FLAVOURS,
    Flavour,
    SimLora,
    SimModel,
    SimStyle,
    SimulatorConfig,
)
from .events import Event, EventLog
from .faults import Faults
from .infotext import format_infotext, parse_infotext
from .server import ForgeSimulator

__all__ = [
    "DEFAULT_LORAS",
    "DEFAULT_MODELS",
    "FLAVOURS",
    "Event",
    "EventLog",
    "Faults",
    "Flavour",
    "ForgeSimulator",
    "SimLora",
    "SimModel",
    "SimStyle",
    "SimulatorConfig",
    "format_infotext",
    "parse_infotext",
]
