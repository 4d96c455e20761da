"""GET /api/v1/servers/<alias>/lists: a server's VAEs, modules, upscalers, styles, scripts
and ControlNet models from the cache."""

from collections.abc import Iterator

import pytest
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from servers_app.models import Server
from servers_app.services import server_refresh_models
from tests.support import assert_error, key_client


@pytest.fixture
def forge_server(db) -> Iterator[Server]:
    with ForgeSimulator(SimulatorConfig(flavour="forge-2", adetailer=True)) as simulator:
        server = baker.make(Server, alias="Forge", api_url=simulator.url, flavour="forge")
        server_refresh_models(server=server)
        yield server


def test_a_client_key_reads_a_servers_lists(forge_server):
    response = key_client("anna").get("/api/v1/servers/Forge/lists")

    assert response.status_code == 200
    body = response.json()
    assert body["server"] == "Forge"
    assert body["stale"] is False
    assert "script" in body["listed"]
    assert body["vaes"] == []
    assert {
        "name": "ae.safetensors",
        "filename": "/opt/sd/models/VAE/ae.safetensors",
        "folder": "VAE",
    } in body["modules"]
    assert {
        "name": "Cinematic",
        "prompt": "cinematic still of {prompt}, shallow depth of field",
        "negative_prompt": "cartoon",
    } in body["styles"]
    names = [script["name"] for script in body["scripts"]]
    assert len(names) == len(set(names))  # once each, though cached as a row a mode
    adetailer = next(script for script in body["scripts"] if script["name"] == "adetailer")
    assert adetailer["alwayson"] is True
    assert adetailer["modes"] == ["txt2img", "img2img"]
    assert adetailer["args"]["txt2img"][0]["label"] == "Enable ADetailer"
    assert {"name": "Latent", "latent": True, "scale": None} in body["upscalers"]
    assert {"name": "diffusers_xl_canny_mid [112a778d]"} in body["controlnet_models"]


def test_the_lists_of_an_unknown_server_are_a_404(db):
    response = key_client("anna").get("/api/v1/servers/Nope/lists")

    assert_error(response, 404, "server_not_found")


def test_a_server_never_refreshed_has_empty_lists(db):
    baker.make(Server, alias="New", api_url="http://127.0.0.1:9")

    body = key_client("anna").get("/api/v1/servers/New/lists").json()

    assert (body["refreshed_at"], body["listed"], body["scripts"]) == (None, [], [])
