"""GET /api/v1/checkpoints, /api/v1/loras and POST /api/v1/servers/<alias>/refresh-models."""

import pytest
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from servers_app.model_cache import checkpoint_rows, lora_rows
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.resolver import resolve
from servers_app.selectors import server_checkpoints
from servers_app.services import server_refresh_models
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


def test_checkpoints_answer_an_array_of_each_model_once_with_its_servers(client, servers):
    response = client.get("/api/v1/checkpoints")

    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert response["X-Total-Count"] == "3"
    names = [c["name"] for c in body]
    assert names == ["cyber_v8", "dreamshaper_8", "sd_xl_base_1.0"]
    cyber = body[0]
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


def test_checkpoints_carry_the_originals_filename_and_relative_path(client, servers):
    body = client.get("/api/v1/checkpoints").json()

    shapes = {c["name"]: (c["relativePath"], c["filename"]) for c in body}
    assert shapes == {
        "cyber_v8": ("Pony", "cyber_v8.safetensors"),
        "dreamshaper_8": ("SD15", "dreamshaper_8.safetensors"),
        "sd_xl_base_1.0": (".", "sd_xl_base_1.0.safetensors"),
    }
    assert set(body[0]) >= {"title", "name", "path", "hash", "sha256", "servers"}


def test_checkpoints_filter_by_server_and_search(client, servers):
    laptop = client.get("/api/v1/checkpoints", {"server_alias": "Laptop"})
    search = client.get("/api/v1/checkpoints", {"search": "DREAM"})

    assert [c["name"] for c in laptop.json()] == ["cyber_v8", "sd_xl_base_1.0"]
    assert [s["alias"] for s in laptop.json()[0]["servers"]] == ["Laptop"]
    assert laptop["X-Total-Count"] == "2"
    assert [c["name"] for c in search.json()] == ["dreamshaper_8"]
    assert search["X-Total-Count"] == "1"


def test_checkpoints_are_paged_with_the_total_in_a_header(client, servers):
    page = client.get("/api/v1/checkpoints", {"limit": 1, "offset": 1})

    assert page["X-Total-Count"] == "3"
    assert [c["name"] for c in page.json()] == ["dreamshaper_8"]


def test_total_count_header_is_readable_cross_origin(client, servers, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = True

    response = client.get("/api/v1/checkpoints", HTTP_ORIGIN="http://phone.local")

    assert "x-total-count" in response["Access-Control-Expose-Headers"].lower()


@pytest.mark.parametrize("query", [{"limit": 0}, {"offset": -1}, {"limit": 500}])
def test_checkpoints_bad_paging_is_400(client, servers, query):
    assert_error(client.get("/api/v1/checkpoints", query), 400, "validation_error")


@pytest.mark.parametrize("query", [{"limit": 0}, {"offset": -1}, {"limit": 500}])
def test_loras_bad_paging_is_400(client, servers, query):
    assert_error(client.get("/api/v1/loras", query), 400, "validation_error")


def test_checkpoints_of_unknown_server_is_404(client, servers):
    assert_error(client.get("/api/v1/checkpoints", {"server_alias": "x"}), 404, "server_not_found")
    assert_error(client.get("/api/v1/loras", {"server_alias": "x"}), 404, "server_not_found")


def test_loras_answer_an_array_with_metadata(client, servers):
    response = client.get("/api/v1/loras")

    assert response["X-Total-Count"] == "1"
    (lora,) = response.json()
    assert lora["name"] == "add_detail"
    assert lora["alias"] == "add_detail"
    assert lora["path"] == "add_detail.safetensors"
    assert lora["base_model"] == "sd_v1"
    assert lora["trigger_words"] == ["sharp", "detailed"]
    assert [s["alias"] for s in lora["servers"]] == ["Laptop"]


def test_loras_carry_filename_relative_path_and_the_name_for_the_prompt(client, servers):
    cache(
        servers[1],
        lora_rows(
            [
                {
                    "name": "Smooth Pony",
                    "alias": "smooth_pony_v2",
                    "path": "/opt/sd/models/Lora/styles/Smooth Pony.safetensors",
                    "metadata": {},
                }
            ]
        ),
    )

    body = client.get("/api/v1/loras").json()

    shapes = {
        lora["name"]: (lora["relativePath"], lora["filename"], lora["name_for_prompt"])
        for lora in body
    }
    assert shapes == {
        "add_detail": (".", "add_detail.safetensors", "add_detail"),
        "Smooth Pony": ("styles", "Smooth Pony.safetensors", "Smooth Pony"),
    }


def test_schema_declares_the_model_lists_as_arrays_with_a_total_header(client, db):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()

    for path, item in (("/api/v1/checkpoints", "Checkpoint"), ("/api/v1/loras", "Lora")):
        operation = schema["paths"][path]["get"]
        ok = operation["responses"]["200"]
        body = ok["content"]["application/json"]["schema"]
        assert body["type"] == "array"
        assert body["items"]["$ref"] == f"#/components/schemas/{item}"
        assert ok["headers"]["X-Total-Count"]["schema"]["type"] == "integer"
        assert {"400", "401", "404"} <= set(operation["responses"])
        query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert query == {"server_alias", "search", "limit", "offset"}
        assert not [p for p in operation["parameters"] if p["in"] == "header"]
    components = schema["components"]["schemas"]
    assert {"filename", "relativePath", "name_for_prompt"} <= set(components["Lora"]["required"])
    assert {"filename", "relativePath"} <= set(components["Checkpoint"]["required"])


def test_models_lists_need_a_key(anon_client, servers):
    assert_error(anon_client.get("/api/v1/checkpoints"), 401, "authentication_required")
    assert_error(anon_client.get("/api/v1/loras"), 401, "authentication_required")


@pytest.mark.django_db(transaction=True)
def test_relative_path_and_filename_resolve_on_windows_and_linux_servers(client):
    models = [
        SimModel("Pony/cyberrealisticPony_v8.safetensors", sha256="9f90c59f3a" + "0" * 54),
        SimModel("XL/Pony/cyberrealisticPony_v8.safetensors"),
        SimModel("sd_xl_base_1.0.safetensors"),
    ]
    sims = {
        alias: ForgeSimulator(
            SimulatorConfig(flavour=flavour, path_separator=separator, models=models)
        ).start()
        for alias, flavour, separator in (("Win", "forge-2", "\\"), ("Linux", "a1111-1.10", "/"))
    }
    try:
        for alias, sim in sims.items():
            server = baker.make(Server, alias=alias, api_url=sim.url)
            assert not server_refresh_models(server=server).error

        listed = client.get("/api/v1/checkpoints").json()

        assert {(c["relativePath"], c["filename"]) for c in listed} == {
            ("Pony", "cyberrealisticPony_v8.safetensors"),
            ("XL/Pony", "cyberrealisticPony_v8.safetensors"),
            (".", "sd_xl_base_1.0.safetensors"),
        }
        resolved = set()
        for checkpoint in listed:
            requested = checkpoint["relativePath"] + "/" + checkpoint["filename"]
            for where in checkpoint["servers"]:
                server = Server.objects.get(alias=where["alias"])
                resolution = resolve(requested, server_checkpoints(server=server))
                assert resolution.title == where["title"], (requested, where)
                resolved.add((requested, where["alias"]))
        # The hash the Windows server computed for its loaded model may list it apart.
        assert resolved == {
            (path, alias)
            for path in (
                "Pony/cyberrealisticPony_v8.safetensors",
                "XL/Pony/cyberrealisticPony_v8.safetensors",
                "./sd_xl_base_1.0.safetensors",
            )
            for alias in ("Win", "Linux")
        }
    finally:
        for sim in sims.values():
            sim.stop()


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
