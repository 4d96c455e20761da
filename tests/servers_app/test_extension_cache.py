"""A server's extension lists (servers_app.extension_cache): VAEs, modules, upscalers,
styles, scripts and ControlNet models, cached and refreshed with its models."""

from collections.abc import Iterator

import pytest
import responses
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from servers_app.extension_cache import (
    controlnet_rows,
    file_rows,
    find_listed,
    requirement_key,
    script_rows,
    style_rows,
    upscaler_rows,
)
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.services import server_forget_models, server_refresh_models


@pytest.fixture
def forge() -> Iterator[ForgeSimulator]:
    with ForgeSimulator(SimulatorConfig(flavour="forge-2", adetailer=True)) as simulator:
        yield simulator


@pytest.fixture
def a1111() -> Iterator[ForgeSimulator]:
    with ForgeSimulator(SimulatorConfig(flavour="a1111-1.10")) as simulator:
        yield simulator


def _kinds(server: Server) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind, title in CachedModel.objects.filter(server=server).values_list("kind", "title"):
        found.setdefault(kind, []).append(title)
    return found


def test_a_forge_server_lists_its_modules_scripts_styles_upscalers_and_controlnet_models(db, forge):
    server = baker.make(Server, alias="Forge", api_url=forge.url, flavour="forge")

    server_refresh_models(server=server)

    server.refresh_from_db()
    kinds = _kinds(server)
    assert sorted(server.listed_kinds) == sorted(
        ["module", "upscaler", "style", "script", "controlnet_model"]
    )
    assert "ae.safetensors" in kinds["module"]
    assert "t5xxl_fp8_e4m3fn.safetensors" in kinds["module"]
    assert {"controlnet", "adetailer", "x/y/z plot"} <= set(kinds["script"])
    assert set(kinds["style"]) == {"Cinematic", "Watercolor"}
    assert {"Latent", "4x-UltraSharp"} <= set(kinds["upscaler"])
    assert "control_v11p_sd15_canny [d14c016b]" in kinds["controlnet_model"]
    assert ModelKind.VAE not in kinds


def test_an_a1111_server_lists_its_vaes_and_has_no_controlnet_by_default(db, a1111):
    server = baker.make(Server, alias="Old", api_url=a1111.url, flavour="a1111")

    server_refresh_models(server=server)

    server.refresh_from_db()
    kinds = _kinds(server)
    assert sorted(server.listed_kinds) == ["script", "style", "upscaler", "vae"]
    assert set(kinds["vae"]) == {"sdxl_vae.safetensors", "ae.safetensors"}
    assert "controlnet" not in kinds["script"]
    assert ModelKind.CONTROLNET_MODEL not in kinds


def test_a_list_that_fails_keeps_its_old_rows_but_is_no_longer_listed(db):
    server = baker.make(Server, alias="Flaky", api_url="http://127.0.0.1:9", flavour="a1111")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        base = "http://127.0.0.1:9/sdapi/v1"
        mocked.get(f"{base}/sd-models", json=[{"title": "a.safetensors", "model_name": "a"}])
        mocked.get(f"{base}/loras", json=[])
        mocked.get(f"{base}/sd-vae", json=[{"model_name": "v.safetensors", "filename": "/v"}])
        mocked.get(f"{base}/prompt-styles", json=[{"name": "Old style"}])
        server_refresh_models(server=server)
        mocked.replace(responses.GET, f"{base}/prompt-styles", status=500, json={"error": "x"})
        server_refresh_models(server=server)

    server.refresh_from_db()
    assert "style" not in server.listed_kinds
    assert "vae" in server.listed_kinds
    assert CachedModel.objects.filter(server=server, kind="style", title="Old style").exists()


def test_forgetting_a_servers_models_forgets_which_lists_it_had(db, forge):
    server = baker.make(Server, alias="Forge", api_url=forge.url, flavour="forge")
    server_refresh_models(server=server)

    server_forget_models(server_id=server.pk)

    server.refresh_from_db()
    assert server.listed_kinds == []
    assert not CachedModel.objects.filter(server=server).exists()


def test_forge_modules_keep_their_folder_and_path():
    (row,) = file_rows(
        ModelKind.MODULE,
        [{"model_name": "ae.safetensors", "filename": "C:\\sd\\models\\VAE\\ae.safetensors"}],
    )

    assert row.title == "ae.safetensors"
    assert row.filename == "C:\\sd\\models\\VAE\\ae.safetensors"
    assert row.metadata == {"folder": "VAE"}
    assert row.requirement_key == "file:ae"


def test_scripts_merge_both_modes_and_what_script_info_says():
    row, img2img = script_rows(
        {"txt2img": ["controlnet"], "img2img": ["controlnet"]},
        [
            {"name": "controlnet", "is_alwayson": True, "is_img2img": False, "args": []},
            {"name": "controlnet", "is_alwayson": True, "is_img2img": True, "args": [{}]},
        ],
    )

    assert row.title == "controlnet"
    assert row.metadata["modes"] == ["txt2img", "img2img"]
    assert row.metadata["alwayson"] is True
    assert len(row.metadata["args"]["img2img"]) == 1
    # One row a mode, so that an "any" job's script key (its mode's) matches in SQL.
    assert (row.requirement_key, img2img.requirement_key) == (
        "script:txt2img:controlnet",
        "script:img2img:controlnet",
    )
    assert (img2img.title, img2img.metadata) == (row.title, row.metadata)


def test_a_script_known_from_script_info_alone_is_taken_for_both_modes():
    rows = script_rows({}, [{"name": "regional prompter", "is_alwayson": True}])

    assert [row.requirement_key for row in rows] == [
        "script:txt2img:regional prompter",
        "script:img2img:regional prompter",
    ]


def test_a_script_without_script_info_is_of_unknown_kind():
    (row,) = script_rows({"txt2img": ["x/y/z plot"], "img2img": None}, [])

    assert row.metadata == {"modes": ["txt2img"], "alwayson": None}


def test_latent_modes_are_upscalers_too():
    rows = upscaler_rows([{"name": "R-ESRGAN 4x+", "scale": 4}], [{"name": "Latent"}])

    assert [(r.title, r.metadata["latent"]) for r in rows] == [
        ("Latent", True),
        ("R-ESRGAN 4x+", False),
    ]


def test_styles_keep_their_prompts():
    (row,) = style_rows([{"name": "Noir", "prompt": "noir {prompt}", "negative_prompt": None}])

    assert row.metadata == {"prompt": "noir {prompt}", "negative_prompt": ""}


def test_controlnet_models_leave_out_none():
    rows = controlnet_rows({"model_list": ["None", "control_canny [abc12345]"]})

    assert [row.title for row in rows] == ["control_canny [abc12345]"]
    assert rows[0].requirement_key == "controlnet:control_canny"


@pytest.mark.parametrize(
    ("kind", "name", "key"),
    [
        (ModelKind.VAE, "VAE/sdxl_vae.safetensors", "file:sdxl_vae"),
        (ModelKind.MODULE, "T5XXL_fp8", "file:t5xxl_fp8"),
        (ModelKind.SCRIPT, "X/Y/Z Plot", "script:txt2img:x/y/z plot"),
        (ModelKind.STYLE, " Cinematic ", "style:cinematic"),
        (ModelKind.CONTROLNET_MODEL, "control_canny [abc12345]", "controlnet:control_canny"),
        (ModelKind.VAE, "", ""),
    ],
)
def test_requirement_keys_are_one_spelling_per_thing(kind, name, key):
    assert requirement_key(kind, name) == key


def test_a_scripts_requirement_key_names_its_mode():
    assert requirement_key(ModelKind.SCRIPT, "ADetailer", mode="img2img") == (
        "script:img2img:adetailer"
    )


@pytest.mark.parametrize(
    "requested", ["sdxl_vae.safetensors", "SDXL_VAE", "/opt/sd/models/VAE/sdxl_vae.safetensors"]
)
def test_a_vae_is_found_by_file_name_stem_or_path(requested):
    rows = file_rows(
        ModelKind.VAE,
        [{"model_name": "sdxl_vae.safetensors", "filename": "/opt/sd/models/VAE/x"}],
    )

    assert find_listed(ModelKind.VAE, requested, rows) is rows[0]


def test_a_controlnet_model_is_found_with_or_without_its_hash():
    rows = controlnet_rows({"model_list": ["control_v11p_sd15_canny [d14c016b]"]})

    assert find_listed(ModelKind.CONTROLNET_MODEL, "control_v11p_sd15_canny", rows) is rows[0]
    assert find_listed(ModelKind.CONTROLNET_MODEL, "control_v11p_sd15_canny [d14c016b]", rows)
    assert find_listed(ModelKind.CONTROLNET_MODEL, "control_depth", rows) is None
