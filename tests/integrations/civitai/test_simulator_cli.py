"""From the `civitai_simulator` command line to a simulator
(`integrations.civitai.simulator.cli`)."""

import io

import pytest
from django.core.management import CommandError, call_command

from integrations.civitai.simulator import demo_catalog, safetensors_bytes
from integrations.civitai.simulator.cli import parse_file_spec, simulator_from_options
from integrations.simulator_http import SimulatorStartError


def test_a_file_spec_is_a_path_and_a_type_checkpoint_by_default(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x")

    assert parse_file_spec(str(path)) == (str(path), "Checkpoint")
    assert parse_file_spec(f"{path}:LORA") == (str(path), "LORA")


def test_an_unknown_model_type_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"x")

    with pytest.raises(SimulatorStartError, match="Unknown model type 'Lora'"):
        parse_file_spec(f"{path}:Lora")


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(SimulatorStartError, match="No such file"):
        parse_file_spec(str(tmp_path / "absent.safetensors"))


def test_local_files_join_the_demo_catalogue_with_numbered_ids(tmp_path):
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    first.write_bytes(safetensors_bytes(b"1" * 100))
    second.write_bytes(safetensors_bytes(b"2" * 100))
    out = io.StringIO()

    sim = simulator_from_options(
        files=[str(first), f"{second}:VAE"],
        api_keys=["k"],
        require_login=True,
        bytes_per_second=1000.0,
        host="127.0.0.1",
        port=0,
        out=out,
    )
    added = sim.config.catalog.models[len(demo_catalog().models) :]

    assert [(m.id, m.name, m.type, m.versions[0].id) for m in added] == [
        (1001, "one", "Checkpoint", 10001),
        (1002, "two", "VAE", 10002),
    ]
    assert (sim.config.api_keys, sim.config.unauthenticated_download) == ({"k"}, False)
    assert sim.faults.bytes_per_second == 1000.0
    assert out.getvalue() == f"Hashing {first} ...\nHashing {second} ...\n"


def test_the_command_reports_a_refused_option_as_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        call_command("civitai_simulator", "--file", str(tmp_path / "absent.safetensors"))
