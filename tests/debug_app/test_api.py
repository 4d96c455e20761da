"""GET /api/v1/debug/verify-checkpoint and /api/v1/debug/models-cache, checked field by
field against SEED_API.md's examples, on a simulated Windows Forge server."""

from collections.abc import Iterator

import pytest
import requests
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from servers_app.models import Server
from servers_app.services import server_refresh_models
from tests.support import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

# The example's checkpoint, with a SHA-256 whose first 10 hex are the documented hash.
PONY = SimModel("Pony/cyberrealisticPony_v8.safetensors", sha256="9f90c59f3a" + "1" * 54)
OTHERS = [SimModel("sd_xl_base_1.0.safetensors"), SimModel("SD15/dreamshaper_8.safetensors")]


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(flavour="forge-2", path_separator="\\", models=[PONY, *OTHERS])
    ).start()
    # Load the model once so the server knows its hash, as in the documented example.
    requests.post(
        f"{simulator.url}/sdapi/v1/txt2img",
        json={
            "prompt": "x",
            "steps": 1,
            "width": 64,
            "height": 64,
            "override_settings": {"sd_model_checkpoint": "Pony\\cyberrealisticPony_v8.safetensors"},
        },
        timeout=30,
    ).raise_for_status()
    yield simulator
    simulator.stop()


@pytest.fixture
def laptop(sim) -> Server:
    return baker.make(Server, alias="Laptop", api_url=sim.url)


def verify(client, **params):
    return client.get("/api/v1/debug/verify-checkpoint", params)


def test_verify_checkpoint_matches_the_documented_example(client, laptop):
    response = verify(
        client, checkpoint_path="Pony/cyberrealisticPony_v8.safetensors", server_alias="Laptop"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["original_path"] == "Pony/cyberrealisticPony_v8.safetensors"
    assert body["normalized_path"] == "Pony\\cyberrealisticPony_v8.safetensors"
    assert body["matched_model"] == "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]"
    assert body["available_models"] == sorted(
        [
            "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]",
            "sd_xl_base_1.0.safetensors",
            "SD15\\dreamshaper_8.safetensors",
        ]
    )
    assert body["match_rule"] == "path"


def test_verify_checkpoint_reads_the_live_list(client, laptop, sim):
    sim.set_models([PONY, *OTHERS, SimModel("SD15/new_model.safetensors")])
    requests.post(f"{sim.url}/sdapi/v1/refresh-checkpoints", timeout=10)

    body = verify(
        client, checkpoint_path="SD15/new_model.safetensors", server_alias="Laptop"
    ).json()

    assert body["success"] is True
    assert body["matched_model"] == "SD15\\new_model.safetensors"


def test_verify_unknown_checkpoint_gives_close_matches(client, laptop):
    body = verify(
        client, checkpoint_path="Pony/cyberrealisticPony_v9.safetensors", server_alias="Laptop"
    ).json()

    assert body["success"] is False
    assert body["matched_model"] is None
    assert body["close_matches"] == ["Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]"]
    assert "not found" in body["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"server_alias": "Laptop"}, "checkpoint_path"),
        ({"checkpoint_path": "x"}, "server_alias"),
        ({}, "checkpoint_path"),
    ],
)
def test_verify_without_required_parameters_is_400(client, laptop, params, field):
    assert field in assert_error(verify(client, **params), 400, "validation_error")["fields"]


def test_verify_on_unknown_server_is_404(client, laptop):
    assert_error(verify(client, checkpoint_path="x", server_alias="Nope"), 404, "server_not_found")


def test_verify_on_unreachable_server_is_502(client, laptop, sim):
    sim.faults.refuse_connections = True

    response = verify(client, checkpoint_path="x", server_alias="Laptop")

    assert "Laptop" in assert_error(response, 502, "server_unreachable")["message"]


def test_models_cache_matches_the_documented_example(client, laptop):
    server_refresh_models(server=laptop)

    response = client.get("/api/v1/debug/models-cache")

    assert response.status_code == 200
    body = response.json()
    assert body["cache_size"] == 3
    pony = next(m for m in body["models"] if m["name"] == "cyberrealisticPony_v8")
    assert isinstance(pony["id"], int)
    assert pony["path"] == "Pony/cyberrealisticPony_v8.safetensors"
    assert pony["normalized_path"] == "Pony\\cyberrealisticPony_v8.safetensors"
    assert pony["hash"] == "9f90c59f3a"
    assert pony["title"] == "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]"
    assert pony["aliases"] == [
        "Pony/cyberrealisticPony_v8.safetensors",
        "Pony\\cyberrealisticPony_v8.safetensors",
    ]
    unhashed = next(m for m in body["models"] if m["name"] == "dreamshaper_8")
    assert unhashed["hash"] is None


def test_models_cache_filters_by_server_and_kind(client, laptop, sim):
    other = baker.make(Server, alias="Desktop", api_url=sim.url)
    server_refresh_models(server=laptop)
    server_refresh_models(server=other)

    everything = client.get("/api/v1/debug/models-cache").json()
    desktop = client.get("/api/v1/debug/models-cache", {"server_alias": "Desktop"}).json()
    loras = client.get("/api/v1/debug/models-cache", {"kind": "lora"}).json()

    assert everything["cache_size"] == 6
    assert desktop["cache_size"] == 3
    assert {m["server_alias"] for m in desktop["models"]} == {"Desktop"}
    assert loras["cache_size"] > 0
    assert {m["kind"] for m in loras["models"]} == {"lora"}


def test_models_cache_bad_filters(client, laptop):
    assert_error(
        client.get("/api/v1/debug/models-cache", {"server_alias": "Nope"}), 404, "server_not_found"
    )
    assert_error(
        client.get("/api/v1/debug/models-cache", {"kind": "embedding"}), 400, "validation_error"
    )
