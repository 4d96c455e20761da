"""The simulators' scripts and extensions: /sdapi/v1/scripts and /script-info with
ControlNet and ADetailer present or absent, prompt styles, VAE and module lists, ControlNet's
model list, and a request's scripts refused as A1111/Forge refuse them. Forge answers are
validated against the captured OpenAPI documents (contracts/)."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from integrations.forge.simulator import ForgeSimulator, SimStyle, SimulatorConfig

CONTRACTS = Path(__file__).resolve().parents[4] / "contracts"


@pytest.fixture
def make_sim() -> Iterator[Callable[..., ForgeSimulator]]:
    started: list[ForgeSimulator] = []

    def factory(**config: Any) -> ForgeSimulator:
        simulator = ForgeSimulator(SimulatorConfig(seconds_per_step=0.0, **config)).start()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture(scope="module")
def forge_contract() -> OpenAPI:
    return OpenAPI.from_file_path(
        str(CONTRACTS / "forge-f2-openapi.json"), config=Config(spec_validator_cls=None)
    )


def get(sim: ForgeSimulator, path: str) -> requests.Response:
    return requests.get(f"{sim.url}{path}", timeout=10)


def txt2img(sim: ForgeSimulator, **payload: Any) -> requests.Response:
    return requests.post(f"{sim.url}/sdapi/v1/txt2img", json={"steps": 1, **payload}, timeout=10)


@pytest.mark.parametrize(
    "path",
    [
        "/sdapi/v1/scripts",
        "/sdapi/v1/script-info",
        "/sdapi/v1/prompt-styles",
        "/sdapi/v1/sd-modules",
        "/controlnet/model_list",
        "/adetailer/v1/ad_model",
    ],
)
def test_forges_extension_answers_match_the_contract(make_sim, forge_contract, path):
    response = get(make_sim(adetailer=True), path)

    forge_contract.validate_response(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    )
    assert response.status_code == 200


def test_forge_lists_its_builtin_controlnet_and_adetailer_when_installed(make_sim):
    scripts = get(make_sim(adetailer=True), "/sdapi/v1/scripts").json()

    assert {"controlnet", "adetailer", "x/y/z plot"} <= set(scripts["txt2img"])
    assert {"controlnet", "adetailer", "loopback"} <= set(scripts["img2img"])


def test_a_fresh_a1111_has_neither_controlnet_nor_adetailer(make_sim):
    sim = make_sim(flavour="a1111-1.10")

    scripts = get(sim, "/sdapi/v1/scripts").json()

    assert not {"controlnet", "adetailer"} & set(scripts["txt2img"])
    assert get(sim, "/controlnet/model_list").status_code == 404
    assert get(sim, "/adetailer/v1/ad_model").status_code == 404


def test_a1111_with_controlnet_lists_its_models(make_sim):
    sim = make_sim(flavour="a1111-1.10", controlnet=True, controlnet_models=["canny [abcd1234]"])

    assert "controlnet" in get(sim, "/sdapi/v1/scripts").json()["txt2img"]
    assert get(sim, "/controlnet/model_list").json() == {"model_list": ["canny [abcd1234]"]}


def test_script_info_describes_each_script_per_mode(make_sim):
    info = get(make_sim(adetailer=True), "/sdapi/v1/script-info").json()

    adetailer = [entry for entry in info if entry["name"] == "adetailer"]
    xyz = next(entry for entry in info if entry["name"] == "x/y/z plot")
    assert [entry["is_img2img"] for entry in adetailer] == [False, True]
    assert all(entry["is_alwayson"] for entry in adetailer)
    assert adetailer[0]["args"][0] == {
        "label": "Enable ADetailer",
        "value": False,
        "minimum": None,
        "maximum": None,
        "step": None,
        "choices": None,
    }
    assert xyz["is_alwayson"] is False


def test_prompt_styles_are_the_configured_ones(make_sim):
    sim = make_sim(styles=[SimStyle("Noir", "noir {prompt}", "color")])

    assert get(sim, "/sdapi/v1/prompt-styles").json() == [
        {"name": "Noir", "prompt": "noir {prompt}", "negative_prompt": "color"}
    ]


def generated(response: requests.Response) -> tuple[dict[str, Any], str]:
    """The response's info and its first image's infotext."""
    import json

    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    return info, info["infotexts"][0]


STYLES = [
    SimStyle("Noir", "noir photo of {prompt}, high contrast", "color"),
    SimStyle("Grain", "film grain", "blurry"),
]


@pytest.mark.parametrize("flavour", ["forge-2", "a1111-1.10"])
def test_a_styles_prompt_takes_the_prompt_at_its_placeholder(make_sim, flavour):
    sim = make_sim(flavour=flavour, styles=STYLES)

    info, infotext = generated(txt2img(sim, prompt="a cat", styles=["Noir"]))

    assert info["prompt"] == info["all_prompts"][0] == "noir photo of a cat, high contrast"
    assert info["negative_prompt"] == "color"  # no placeholder: appended (to nothing here)
    assert info["styles"] == ["Noir"]
    assert infotext.startswith("noir photo of a cat, high contrast\nNegative prompt: color\n")
    # The infotext names no style: a reader finds them in the prompt ("Styles array").
    assert "Styles" not in infotext
    assert "Noir" not in infotext


def test_a_style_without_a_placeholder_is_appended_after_a_comma(make_sim):
    sim = make_sim(styles=STYLES)

    info, infotext = generated(
        txt2img(sim, prompt=" a cat ", negative_prompt="ugly", styles=["Grain"])
    )

    assert (info["prompt"], info["negative_prompt"]) == ("a cat, film grain", "ugly, blurry")
    assert infotext.startswith("a cat, film grain\nNegative prompt: ugly, blurry\n")


def test_styles_apply_in_their_order_each_to_the_last_ones_result(make_sim):
    sim = make_sim(styles=STYLES)

    info, _ = generated(txt2img(sim, prompt="a cat", styles=["Grain", "Noir"]))

    assert info["prompt"] == "noir photo of a cat, film grain, high contrast"
    assert info["negative_prompt"] == "blurry, color"


def test_an_unknown_style_adds_nothing(make_sim):
    # A1111 looks a style up by its exact name and takes an unknown one as empty.
    sim = make_sim(styles=STYLES)

    info, _ = generated(txt2img(sim, prompt="a cat ", styles=["noir", "Sepia"]))

    assert (info["prompt"], info["negative_prompt"]) == ("a cat", "")
    assert info["styles"] == ["noir", "Sepia"]


def test_a_styles_lora_is_loaded_as_the_prompts_own(make_sim):
    from integrations.forge.simulator import SimLora

    sim = make_sim(
        styles=[SimStyle("Ink", "{prompt}, <lora:ink_style:0.8>")],
        loras=[SimLora("ink_style")],
    )

    _, infotext = generated(txt2img(sim, prompt="a cat", styles=["Ink"]))

    assert 'Lora hashes: "ink_style: ' in infotext


def test_img2img_applies_the_styles_too(make_sim):
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(out, "PNG")
    sim = make_sim(styles=STYLES)

    response = requests.post(
        f"{sim.url}/sdapi/v1/img2img",
        json={
            "steps": 1,
            "prompt": "a cat",
            "styles": ["Grain"],
            "init_images": [base64.b64encode(out.getvalue()).decode()],
        },
        timeout=10,
    )

    assert generated(response)[0]["prompt"] == "a cat, film grain"


def test_a1111_lists_vaes_and_forge_modules(make_sim):
    a1111 = get(make_sim(flavour="a1111-1.10"), "/sdapi/v1/sd-vae").json()
    forge = get(make_sim(), "/sdapi/v1/sd-modules").json()

    assert {item["model_name"] for item in a1111} == {"sdxl_vae.safetensors", "ae.safetensors"}
    assert "clip_l.safetensors" in {item["model_name"] for item in forge}


def test_scripts_the_server_has_are_run_whatever_their_case(make_sim):
    sim = make_sim(adetailer=True)
    scripts = {"ADetailer": {"args": [True, False, {"ad_model": "face_yolov8n.pt"}]}}

    response = txt2img(sim, alwayson_scripts=scripts, script_name="X/Y/Z Plot")

    assert response.status_code == 200
    (event,) = sim.events.of_type("txt2img_received")
    assert event["alwayson_scripts"] == scripts


def test_adetailer_on_a_server_without_it_is_a_422(make_sim):
    response = txt2img(make_sim(), alwayson_scripts={"ADetailer": {"args": [True]}})

    assert response.status_code == 422
    assert response.json() == {"detail": "Script 'ADetailer' not found"}


def test_a_selectable_script_among_the_always_on_ones_is_a_422(make_sim):
    response = txt2img(make_sim(flavour="a1111-1.10"), alwayson_scripts={"x/y/z plot": {}})

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "Cannot have a selectable script in the always on scripts params"
    )


def test_an_always_on_script_as_script_name_is_not_found(make_sim):
    response = txt2img(make_sim(), script_name="controlnet")

    assert response.status_code == 422
    assert response.json() == {"detail": "Script 'controlnet' not found"}


def test_forges_hires_pass_without_hr_additional_modules_fails_as_forge_does(make_sim):
    sim = make_sim()

    failing = txt2img(sim, enable_hr=True)
    working = txt2img(sim, enable_hr=True, hr_additional_modules=["Use same choices"])

    assert failing.status_code == 500
    assert failing.json()["error"] == "TypeError"
    assert working.status_code == 200


def test_a1111s_hires_pass_needs_no_modules(make_sim):
    assert txt2img(make_sim(flavour="a1111-1.10"), enable_hr=True).status_code == 200


@pytest.fixture(scope="module")
def a1111_contract() -> OpenAPI:
    return OpenAPI.from_file_path(
        str(CONTRACTS / "a1111-v1.6-openapi.json"), config=Config(spec_validator_cls=None)
    )


# Not /sdapi/v1/script-info: A1111's pydantic-1 document leaves `nullable` off its optional
# fields, while the server itself answers `"choices": null` for an argument without choices
# (as Forge's document says).
@pytest.mark.parametrize(
    "path", ["/sdapi/v1/scripts", "/sdapi/v1/prompt-styles", "/sdapi/v1/sd-vae"]
)
def test_a1111s_extension_answers_match_its_contract(make_sim, a1111_contract, path):
    response = get(make_sim(flavour="a1111-1.10", controlnet=True), path)

    a1111_contract.validate_response(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    )
    assert response.status_code == 200


def test_the_extensions_excerpt_is_verbatim_from_the_documents():
    import json

    excerpt = json.loads((CONTRACTS / "extensions-openapi-excerpt.json").read_text())
    for entry in excerpt["documents"].values():
        document = json.loads((CONTRACTS / entry["source"]).read_text())
        schemas = document["components"]["schemas"]
        assert entry["paths"] == {path: document["paths"][path] for path in entry["paths"]}
        assert entry["schemas"] == {name: schemas[name] for name in entry["schemas"]}
        for request, fields in entry["request_fields"].items():
            properties = schemas[request]["properties"]
            assert fields == {name: properties[name] for name in fields}
