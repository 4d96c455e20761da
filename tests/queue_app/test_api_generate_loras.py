"""POST /api/v1/generate with LoRAs: each form people write is accepted, and a LoRA a fresh
model cache does not have is refused with close matches (never queued to be dropped)."""

import copy
from typing import Any

import pytest
from django.utils import timezone
from model_bakery import baker

from queue_app.models import Job
from servers_app.model_cache import lora_rows
from servers_app.models import CachedModel, Server
from tests.support import DOCUMENTED_GENERATE_REQUEST, assert_error, db_snapshot

URL = "/api/v1/generate"


def submit(client, target: str = "Laptop", **params: Any):
    body = copy.deepcopy(DOCUMENTED_GENERATE_REQUEST)
    body["target_server_alias"] = target
    body["generation_params"].update({"checkpoint_name": "", **params})
    return client.post(URL, body, format="json")


def fresh_loras(server: Server, *relative: str, alias: dict[str, str] | None = None) -> None:
    """`server`'s cache, just refreshed, lists these LoRAs (below a Windows LoRA folder)."""
    listing = []
    for path in relative:
        name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        listing.append(
            {
                "name": name,
                "alias": (alias or {}).get(name, name),
                "path": "C:\\sd\\models\\Lora\\" + path.replace("/", "\\"),
                "metadata": {},
            }
        )
    for row in lora_rows(listing):
        CachedModel.objects.create(server=server, **row.fields())
    server.models_refreshed_at = timezone.now()
    server.save()


def test_unknown_lora_is_a_400_with_close_matches_when_the_cache_is_fresh(client, server):
    fresh_loras(server, "add_detail.safetensors", "styles/ink.safetensors")
    before = db_snapshot()

    response = submit(client, loras=[{"name": "add_details.safetensors", "weight": 0.8}])

    error = assert_error(response, 400, "validation_error")
    assert error["fields"] == {
        "generation_params.loras": [
            "LoRA 'add_details.safetensors' was not found on server 'Laptop'. "
            "Did you mean: add_detail?"
        ]
    }
    assert db_snapshot() == before


def test_unknown_lora_tagged_in_the_prompt_is_refused_there(client, server):
    fresh_loras(server, "add_detail.safetensors")

    response = submit(client, positive_prompt="a cat <lora:add_detial:0.7>")

    error = assert_error(response, 400, "validation_error")
    (message,) = error["fields"]["generation_params.positive_prompt"]
    assert "LoRA 'add_detial' was not found on server 'Laptop'. Did you mean: add_detail?" in (
        message
    )
    assert not Job.objects.exists()


def test_a_lora_two_folders_have_is_refused_naming_both(client, server):
    fresh_loras(server, "styles/ink.safetensors", "old/ink.safetensors")

    response = submit(client, loras=[{"name": "ink"}])

    (message,) = assert_error(response, 400, "validation_error")["fields"][
        "generation_params.loras"
    ]
    assert "matches several models on server 'Laptop'" in message
    assert "old\\ink.safetensors, styles\\ink.safetensors" in message


@pytest.mark.parametrize(
    "name",
    [
        "add_detail",
        "add_detail.safetensors",
        "styles/ink.safetensors",
        "styles\\ink",
        "Ink Style",
        "C:\\sd\\models\\Lora\\styles\\ink.safetensors",
    ],
)
def test_known_lora_in_any_form_is_accepted_when_the_cache_is_fresh(client, server, name):
    fresh_loras(
        server, "add_detail.safetensors", "styles/ink.safetensors", alias={"ink": "Ink Style"}
    )

    response = submit(client, loras=[{"name": name, "weight": 0.8}])

    assert response.status_code == 202, response.content


def test_the_job_keeps_its_loras_keys_for_the_scheduler(client, server):
    response = submit(
        client,
        positive_prompt="a cat <lora:Styles\\Ink:0.5>",
        loras=[{"name": "add_detail.safetensors"}, {"name": "ink"}],
    )

    assert response.status_code == 202
    assert Job.objects.get().lora_keys == ["add_detail", "ink"]


def test_unknown_lora_is_accepted_when_the_cache_is_stale(client, server):
    fresh_loras(server, "add_detail.safetensors")
    server.models_stale = True
    server.save()

    response = submit(client, loras=[{"name": "other"}])

    assert response.status_code == 202  # checked against the live list when it runs


@pytest.fixture
def two_servers(server) -> tuple[Server, Server]:
    desktop = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:7861")
    fresh_loras(server, "add_detail.safetensors")
    fresh_loras(desktop, "add_detail.safetensors", "styles/ink.safetensors")
    return server, desktop


def test_an_any_job_is_accepted_when_one_server_has_all_its_loras(client, two_servers):
    response = submit(client, target="any", loras=[{"name": "add_detail"}, {"name": "ink"}])

    assert response.status_code == 202


def test_an_any_job_is_refused_when_no_fresh_server_has_all_its_loras(client, two_servers):
    response = submit(client, target="any", loras=[{"name": "ink"}, {"name": "gone"}])

    messages = assert_error(response, 400, "validation_error")["fields"]["generation_params.loras"]
    assert "LoRA 'ink' was not found on server 'Laptop'." in messages
    assert "LoRA 'gone' was not found on server 'Desktop'." in messages
    assert not Job.objects.exists()


def test_an_any_job_is_accepted_while_a_servers_cache_is_not_fresh(client, two_servers):
    laptop, _ = two_servers
    Server.objects.filter(pk=laptop.pk).update(models_refreshed_at=None)

    response = submit(client, target="any", loras=[{"name": "gone"}])

    assert response.status_code == 202
