"""The Forge simulator in the foreground, as `manage.py forge_simulator` runs it.

The command only declares its arguments; what they mean is here: `simulator_from_options`
turns the command line's values into a `ForgeSimulator` (its config and fault switches),
`serve` starts it, says where it listens and serves until SIGINT or SIGTERM. Plain Python
like the rest of the simulator (no Django): a refused option or a port that cannot be bound
is a `SimulatorStartError` whose message is for the person at the terminal.
"""

from __future__ import annotations

import logging
from typing import Protocol

from integrations.simulator_http import SimulatorStartError, run_until_signalled

from .config import DEFAULT_LORAS, DEFAULT_MODELS, Flavour, SimLora, SimModel, SimulatorConfig
from .server import ForgeSimulator

logger = logging.getLogger(__name__)

__all__ = [
    "OPERATING_SYSTEMS",
    "Output",
    "parse_auth",
    "parse_names",
    "serve",
    "simulator_from_options",
]

# `--os`: the server's operating system decides its path separator.
OPERATING_SYSTEMS = ("windows", "linux")
# Forge/A1111's own defaults: 7860 with the web UI, 7861 API-only (`--nowebui`).
_DEFAULT_PORTS = {True: 7860, False: 7861}


class Output(Protocol):
    """Where the command's lines go (a Django command's `self.stdout`, `sys.stdout`)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def parse_names(value: str | None) -> list[str]:
    """A comma-separated list, blanks dropped: `"a, b,,"` -> `["a", "b"]`."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def parse_auth(value: str | None) -> dict[str, str] | None:
    """`--api-auth` syntax, `user:pass[,user2:pass2]`, as {user: password}; None when empty.
    The password may hold colons (only the first one separates)."""
    if not value:
        return None
    users: dict[str, str] = {}
    for pair in parse_names(value):
        user, sep, password = pair.partition(":")
        if not sep or not user:
            raise SimulatorStartError(f"--auth expects user:password pairs, got {pair!r}")
        users[user] = password
    return users


def simulator_from_options(
    *,
    flavour: Flavour,
    os: str,
    models: str | None,
    loras: str | None,
    seconds_per_step: float,
    switch_seconds: float,
    auth: str | None,
    nowebui: bool,
    no_hashing: bool,
    host: str,
    port: int | None,
    stall_seconds: float = 0.0,
    error_500_next: int = 0,
    drop_mid_job: int = 0,
    adetailer: bool = False,
    controlnet: bool | None = None,
) -> ForgeSimulator:
    """A simulator, not started yet, as the command line describes it.

    `models` / `loras` are comma-separated paths written with '/' (None: the default set);
    `port` None is the real server's default for the mode. Raises `SimulatorStartError`
    for a value the config refuses.
    """
    webui = not nowebui
    try:
        config = SimulatorConfig(
            flavour=flavour,
            path_separator="\\" if os == "windows" else "/",
            models=[SimModel(n) for n in parse_names(models)] if models else list(DEFAULT_MODELS),
            loras=[SimLora(n) for n in parse_names(loras)] if loras else list(DEFAULT_LORAS),
            seconds_per_step=seconds_per_step,
            checkpoint_switch_seconds=switch_seconds,
            auth_users=parse_auth(auth),
            webui=webui,
            port=port if port is not None else _DEFAULT_PORTS[webui],
            host=host,
            no_hashing=no_hashing,
            adetailer=adetailer,
            controlnet=controlnet,
        )
    except ValueError as exc:
        raise SimulatorStartError(str(exc)) from exc
    sim = ForgeSimulator(config)
    sim.faults.stall_seconds = stall_seconds
    sim.faults.error_500_next = error_500_next
    sim.faults.drop_mid_job = drop_mid_job
    return sim


def serve(sim: ForgeSimulator, *, out: Output, verbose: bool = False) -> None:
    """Start `sim`, write the line saying where it listens (`... listening on <url> ...`,
    which scripts and tests read), and serve until SIGINT or SIGTERM; then stop it.

    `verbose` logs every request (debug level) instead of the lifecycle only.
    """
    logging.getLogger("integrations.forge.simulator").setLevel(
        logging.DEBUG if verbose else logging.INFO
    )
    config = sim.config
    try:
        sim.start()
    except OSError as exc:
        raise SimulatorStartError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc

    def announce() -> None:
        out.write(
            f"{config.flavour} simulator listening on {sim.url} "
            f"({'web UI' if config.webui else 'API only'}, {len(config.models)} checkpoints, "
            f"{config.seconds_per_step:g}s/step). Add it as a server in MobileSD; Ctrl-C stops.\n"
        )
        out.flush()

    run_until_signalled(sim, on_ready=announce)
    logger.info("simulator on port %s stopped", sim.port)
