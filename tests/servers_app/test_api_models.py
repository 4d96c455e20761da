"""GET /api/v1/checkpoints, /api/v1/loras and POST /api/v1/servers/<alias>/refresh-models."""

import pytest
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from servers_app.model_cache import checkpoint_rows, lora_rows
from servers_app.models import CachedModel, ModelKind, Server
from tests.support import assert_error


def cache(server: Server, rows) -> None:
    for row in rows:
        CachedModel.objects.create(server=server, **row.fields())


@pytest.fixture
def servers(db) -> tuple[Server, Server]:
    laptop = baker.make(Server, alias="Laptop", api_url="http://a:1")
    desktop = baker.make(Server, alias="Desktop", api_url="http://b:1", models_stale=True)
    sha = "ab" * 32
    cache(
        laptop,
        checkpoint_rows(
            [
                {
                    "title": f"Pony\\cyber_v8.safetensors [{sha[:10]}]",
                    "hash": sha[:10],
                    "sha256": sha,
                },
                {"title": "sd_xl_base_1.0.safetensors"},
            ]
        ),
    )
    cache(
        desktop,
        checkpoint_rows(
            [
                {
                    "title": f"Pony/cyber_v8.safetensors [{sha[:10]}]",
                    "hash": sha[:10],
                    "sha256": sha,
                },
                {"title": "SD15/dreamshaper_8.safetensors"},
            ]
        ),
    )
    cache(
        laptop,
        lora_rows(
            [
                {
                    "name": "add_detail",
                    "alias": "add_detail",
                    "path": "C:\\sd\\models\\Lora\\add_detail.safetensors",
                    "metadata": {
                        "ss_base_model_version": "sd_v1",
                        "ss_tag_frequency": {"x": {"detailed": 4, "sharp": 9}},
                    },
                }
            ]
        ),
    )
    return laptop, desktop


def test_checkpoints_lists_each_model_once_with_its_servers(client, servers):
    response = client.get("/api/v1/checkpoints")

    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 50, 0)
    names = [c["name"] for c in body["checkpoints"]]
    assert names == ["cyber_v8", "dreamshaper_8", "sd_xl_base_1.0"]
    cyber = body["checkpoints"][0]
    assert cyber["hash"] == "abababab" + "ab"
    assert cyber["sha256"] == "ab" * 32
    assert cyber["path"] == "Pony/cyber_v8.safetensors"
    assert [(s["alias"], s["stale"]) for s in cyber["servers"]] == [
        ("Desktop", True),
        ("Laptop", False),
    ]
    assert {s["title"] for s in cyber["servers"]} == {
        "Pony\\cyber_v8.safetensors [ababababab]",
        "Pony/cyber_v8.safetensors [ababababab]",
    }


def test_checkpoints_filter_by_server_and_search(client, servers):
    laptop = client.get("/api/v1/checkpoints", {"server_alias": "Laptop"}).json()
    search = client.get("/api/v1/checkpoints", {"search": "DREAM"}).json()

    assert [c["name"] for c in laptop["checkpoints"]] == ["cyber_v8", "sd_xl_base_1.0"]
    assert [s["alias"] for s in laptop["checkpoints"][0]["servers"]] == ["Laptop"]
    assert [c["name"] for c in search["checkpoints"]] == ["dreamshaper_8"]


def test_checkpoints_are_paginated_like_jobs(client, servers):
    page = client.get("/api/v1/checkpoints", {"limit": 1, "offset": 1}).json()

    assert page["total"] == 3
    assert [c["name"] for c in page["checkpoints"]] == ["dreamshaper_8"]


@pytest.mark.parametrize("query", [{"limit": 0}, {"offset": -1}, {"limit": 500}])
def test_checkpoints_bad_paging_is_400(client, servers, query):
    assert_error(client.get("/api/v1/checkpoints", query), 400, "validation_error")


def test_checkpoints_of_unknown_server_is_404(client, servers):
    assert_error(client.get("/api/v1/checkpoints", {"server_alias": "x"}), 404, "server_not_found")


def test_loras_list_with_metadata(client, servers):
    body = client.get("/api/v1/loras").json()

    assert body["total"] == 1
    (lora,) = body["loras"]
    assert lora["name"] == "add_detail"
    assert lora["alias"] == "add_detail"
    assert lora["path"] == "add_detail.safetensors"
    assert lora["base_model"] == "sd_v1"
    assert lora["trigger_words"] == ["sharp", "detailed"]
    assert [s["alias"] for s in lora["servers"]] == ["Laptop"]


def test_models_lists_need_a_key(anon_client, servers):
    assert_error(anon_client.get("/api/v1/checkpoints"), 401, "authentication_required")
    assert_error(anon_client.get("/api/v1/loras"), 401, "authentication_required")


@pytest.mark.django_db(transaction=True)
def test_refresh_models_endpoint(client):
    sim = ForgeSimulator(SimulatorConfig()).start()
    try:
        baker.make(Server, alias="Sim", api_url=sim.url)

        response = client.post("/api/v1/servers/Sim/refresh-models")

        assert response.status_code == 200
        body = response.json()
        assert body["checkpoints"] == 4
        assert body["added"] >= 4
        assert CachedModel.objects.filter(kind=ModelKind.CHECKPOINT).count() == 4
        sim.faults.refuse_connections = True
        assert_error(client.post("/api/v1/servers/Sim/refresh-models"), 502, "server_unreachable")
        assert CachedModel.objects.filter(kind=ModelKind.CHECKPOINT).count() == 4
    finally:
        sim.stop()


def test_refresh_models_of_unknown_server_is_404(client, db):
    assert_error(client.post("/api/v1/servers/Nope/refresh-models"), 404, "server_not_found")
