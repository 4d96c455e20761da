"""From the `forge_simulator` command line to a simulator (`integrations.forge.simulator.cli`)."""

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from integrations.forge.simulator import DEFAULT_LORAS, DEFAULT_MODELS
from integrations.forge.simulator.cli import parse_auth, parse_names, simulator_from_options
from integrations.simulator_http import SimulatorStartError

DEFAULTS: dict[str, Any] = {
    "flavour": "forge-2",
    "os": "linux",
    "models": None,
    "loras": None,
    "seconds_per_step": 0.05,
    "switch_seconds": 2.0,
    "auth": None,
    "nowebui": False,
    "no_hashing": False,
    "host": "127.0.0.1",
    "port": None,
}


def test_names_are_split_on_commas_and_blanks_dropped():
    assert parse_names(" a/b.safetensors, c.safetensors,, ") == ["a/b.safetensors", "c.safetensors"]
    assert parse_names(None) == []


def test_auth_pairs_split_on_the_first_colon():
    assert parse_auth("alice:s3cret:x, bob:") == {"alice": "s3cret:x", "bob": ""}
    assert parse_auth("") is None


@pytest.mark.parametrize("value", ["alice", ":nouser"])
def test_an_auth_value_without_user_and_colon_is_refused(value):
    with pytest.raises(SimulatorStartError, match="--auth expects user:password pairs"):
        parse_auth(value)


def test_the_options_become_the_config_and_fault_switches():
    sim = simulator_from_options(
        **{
            **DEFAULTS,
            "flavour": "a1111-1.10",
            "os": "windows",
            "models": "Pony/a.safetensors,b.safetensors",
            "loras": "x.safetensors",
            "auth": "u:p",
            "no_hashing": True,
            "port": 0,
        },
        stall_seconds=1.5,
        error_500_next=2,
        drop_mid_job=3,
    )
    config = sim.config

    assert (config.flavour, config.path_separator, config.port) == ("a1111-1.10", "\\", 0)
    assert [m.name for m in config.models] == ["Pony/a.safetensors", "b.safetensors"]
    assert [lora.name for lora in config.loras] == ["x.safetensors"]
    assert (config.auth_users, config.no_hashing, config.webui) == ({"u": "p"}, True, True)
    assert (sim.faults.stall_seconds, sim.faults.error_500_next, sim.faults.drop_mid_job) == (
        1.5,
        2,
        3,
    )


@pytest.mark.parametrize(("nowebui", "port"), [(False, 7860), (True, 7861)])
def test_without_a_port_the_real_servers_default_for_the_mode_is_used(nowebui, port):
    sim = simulator_from_options(**{**DEFAULTS, "nowebui": nowebui})

    assert (sim.config.port, sim.config.webui) == (port, not nowebui)


def test_without_models_the_default_sets_are_served():
    config = simulator_from_options(**DEFAULTS).config

    assert (config.models, config.loras) == (list(DEFAULT_MODELS), list(DEFAULT_LORAS))


def test_a_value_the_config_refuses_is_a_start_error():
    with pytest.raises(SimulatorStartError, match="relative path"):
        simulator_from_options(**{**DEFAULTS, "models": "/abs/a.safetensors"})


def test_the_command_reports_a_refused_option_as_a_command_error():
    with pytest.raises(CommandError, match="--auth expects user:password pairs"):
        call_command("forge_simulator", "--auth", "nocolon")
