"""The model cache against real (simulated) Windows and Linux servers: refresh, the
resolver over every input form, and what happens when a server cannot be reached."""

from collections.abc import Iterator

import pytest
import requests
from model_bakery import baker

from integrations.forge.simulator import Flavour, ForgeSimulator, SimLora, SimModel, SimulatorConfig
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.resolver import resolve
from servers_app.selectors import server_checkpoints, servers_with_model
from servers_app.services import server_refresh_models

pytestmark = pytest.mark.django_db(transaction=True)

PONY = SimModel("Pony/cyberrealisticPony_v8.safetensors", sha256="9f90c59f3a" + "0" * 54)
PONY_XL = SimModel("XL/Pony/cyberrealisticPony_v8.safetensors")  # same file name, other folder
SDXL = SimModel("sd_xl_base_1.0.safetensors")
DREAM = SimModel("SD15/dreamshaper_8.safetensors")
MODELS = [PONY, PONY_XL, SDXL, DREAM]


def start(separator: str, flavour: Flavour = "forge-2", models=MODELS) -> ForgeSimulator:
    config = SimulatorConfig(
        flavour=flavour,
        path_separator=separator,
        models=list(models),
        initial_checkpoint=SDXL.name,
        loras=[
            SimLora(
                "add_detail.safetensors",
                tag_frequency={"10_detail": {"detailed": 40, "intricate": 12}, "5_x": {"sharp": 3}},
            ),
            SimLora("styles/Smooth Pony.safetensors"),
        ],
    )
    return ForgeSimulator(config).start()


@pytest.fixture(
    params=[("\\", "forge-2"), ("/", "a1111-1.10")], ids=["windows-forge", "linux-a1111"]
)
def sim(request) -> Iterator[ForgeSimulator]:
    separator, flavour = request.param
    simulator = start(separator, flavour)
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim) -> Server:
    server = baker.make(Server, alias="Laptop", api_url=sim.url)
    assert not server_refresh_models(server=server).error
    return server


def load(sim: ForgeSimulator, model: SimModel) -> None:
    """Generate once with the model, so the server computes its hash (as real ones do)."""
    response = requests.post(
        f"{sim.url}/sdapi/v1/txt2img",
        json={
            "prompt": "x",
            "steps": 1,
            "width": 64,
            "height": 64,
            "override_settings": {
                "sd_model_checkpoint": model.name.replace("/", sim.config.path_separator)
            },
        },
        timeout=30,
    )
    response.raise_for_status()


def title_of(sim: ForgeSimulator, model: SimModel, *, hashed: bool = False) -> str:
    name = model.name.replace("/", sim.config.path_separator)
    return f"{name} [{model.digest[:10]}]" if hashed else name


# --- refresh -------------------------------------------------------------------------------


def test_refresh_caches_every_checkpoint_and_lora(server, sim):
    checkpoints = CachedModel.objects.filter(server=server, kind=ModelKind.CHECKPOINT)
    loras = CachedModel.objects.filter(server=server, kind=ModelKind.LORA)

    assert {m.relative_path for m in checkpoints} == {title_of(sim, m) for m in MODELS}
    pony = checkpoints.get(relative_path=title_of(sim, PONY))
    assert pony.name == "cyberrealisticPony_v8"
    assert pony.model_name == "Pony_cyberrealisticPony_v8"
    assert pony.filename.endswith(title_of(sim, PONY))
    assert {m.name for m in loras} == {"add_detail", "Smooth Pony"}
    detail = loras.get(name="add_detail")
    assert detail.base_model
    assert detail.trigger_words == ["detailed", "intricate", "sharp"]  # most frequent first
    server.refresh_from_db()
    assert server.models_refreshed_at is not None
    assert not server.models_stale


def test_refresh_follows_added_and_removed_models(server, sim):
    new = SimModel("SD15/epicrealism.safetensors")
    sim.set_models([PONY, SDXL, new])
    requests.post(f"{sim.url}/sdapi/v1/refresh-checkpoints", timeout=10)

    result = server_refresh_models(server=server)

    assert (result.added, result.removed) == (1, 2)
    paths = set(
        server.cached_models.filter(kind="checkpoint").values_list("relative_path", flat=True)
    )
    assert paths == {title_of(sim, PONY), title_of(sim, SDXL), title_of(sim, new)}


def test_refresh_picks_up_the_hash_after_first_load(server, sim):
    before = CachedModel.objects.get(server=server, relative_path=title_of(sim, PONY))
    assert (before.title, before.sha256, before.short_hash) == (title_of(sim, PONY), "", "")

    load(sim, PONY)
    result = server_refresh_models(server=server)

    after = CachedModel.objects.get(pk=before.pk)  # the same row, updated
    assert result.updated >= 1
    assert after.title == title_of(sim, PONY, hashed=True)
    assert after.sha256 == PONY.digest
    assert after.short_hash == PONY.digest[:10]
    assert after.identity == PONY.digest


def test_unreachable_server_keeps_its_list_marked_stale(server, sim):
    count = server.cached_models.count()
    sim.faults.refuse_connections = True

    result = server_refresh_models(server=server)

    server.refresh_from_db()
    assert result.error
    assert server.cached_models.count() == count
    assert server.models_stale is True
    assert "could not connect" in server.models_error
    sim.faults.refuse_connections = False
    assert not server_refresh_models(server=server).error
    server.refresh_from_db()
    assert server.models_stale is False


# --- resolver ------------------------------------------------------------------------------


def forms(sim: ForgeSimulator) -> list[tuple[str, str | None, str]]:
    """(input, expected title or None, expected rule or error) for every accepted form."""
    sep = sim.config.path_separator
    other = "/" if sep == "\\" else "\\"
    pony = title_of(sim, PONY, hashed=True)  # loaded once below, so it has its hash
    install = sim.config.install_dir
    return [
        (pony, pony, "title"),
        ("Pony/cyberrealisticPony_v8.safetensors", pony, "path"),
        ("Pony\\cyberrealisticPony_v8.safetensors", pony, "path"),
        (f"Pony{other}cyberrealisticPony_v8.safetensors [{PONY.digest[:10]}]", pony, "path"),
        ("pony/CYBERREALISTICPONY_V8.SAFETENSORS", pony, "path"),
        ("Pony\\cyberrealisticPony_v8", pony, "path"),  # a folder path without extension
        ("Pony/cyberrealisticPony_v8.ckpt", None, "not_found"),  # another extension is not it
        (PONY.digest[:10], pony, "hash"),
        (PONY.digest.upper(), pony, "hash"),
        (
            f"{install}{sep}models{sep}Stable-diffusion{sep}Pony{sep}cyberrealisticPony_v8.safetensors",
            pony,
            "absolute_path",
        ),
        (
            "/mnt/gpu-box/models/Stable-diffusion/Pony/cyberrealisticPony_v8.safetensors",
            pony,
            "absolute_path",
        ),
        ("dreamshaper_8.safetensors", title_of(sim, DREAM), "name"),
        ("dreamshaper_8", title_of(sim, DREAM), "name"),
        ("SD15_dreamshaper_8", title_of(sim, DREAM), "name"),
        # A1111 loads its configured model at start-up (so it has a hash), Forge lazily.
        ("sd_xl_base_1.0", title_of(sim, SDXL, hashed=sim.config.flavour == "a1111-1.10"), "name"),
        ("cyberrealisticPony_v8.safetensors", None, "ambiguous"),
        ("cyberrealisticPony_v8", None, "ambiguous"),
        ("Pony/cyberrealisticPony_v9.safetensors", None, "not_found"),
        ("0123456789", None, "not_found"),
        ("", None, "not_found"),
    ]


def test_resolver_table(server, sim):
    load(sim, PONY)
    server_refresh_models(server=server)
    models = server_checkpoints(server=server)

    for requested, expected, outcome in forms(sim):
        resolution = resolve(requested, models)
        assert resolution.title == expected, requested
        assert (resolution.rule or resolution.error) == outcome, requested


def test_ambiguous_name_lists_the_candidates(server, sim):
    resolution = resolve("cyberrealisticPony_v8.safetensors", server_checkpoints(server=server))

    assert sorted(resolution.candidates) == sorted([title_of(sim, PONY), title_of(sim, PONY_XL)])
    assert "matches several models" in resolution.message("Laptop")


def test_missing_name_suggests_close_matches(server, sim):
    resolution = resolve(
        "Pony/cyberrealisticPony_v9.safetensors", server_checkpoints(server=server)
    )

    assert title_of(sim, PONY) in resolution.candidates
    assert "was not found on server 'Laptop'" in resolution.message("Laptop")
    assert "Did you mean" in resolution.message("Laptop")


def test_servers_with_model_by_hash_then_by_name(server, sim):
    load(sim, PONY)
    server_refresh_models(server=server)

    assert servers_with_model(kind="checkpoint", sha256=PONY.digest) == ["Laptop"]
    assert servers_with_model(kind="checkpoint", short_hash=PONY.digest[:10].upper()) == ["Laptop"]
    assert servers_with_model(
        kind="checkpoint", sha256="f" * 64, name="dreamshaper_8.safetensors"
    ) == ["Laptop"]
    assert servers_with_model(kind="checkpoint", sha256="f" * 64, name="other.safetensors") == []
    assert servers_with_model(kind="lora", name="add_detail") == ["Laptop"]
