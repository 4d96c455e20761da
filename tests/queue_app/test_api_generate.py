"""POST /api/v1/generate."""

import copy
from typing import Any

import pytest

from queue_app.models import Job, JobStatus
from tests.support import (
    DOCUMENTED_GENERATE_REQUEST,
    DOCUMENTED_STATUS_PARAMS,
    UUID_RE,
    assert_error,
    db_snapshot,
    fresh_cache,
)

URL = "/api/v1/generate"


def submit(client, body: Any, **headers: str):
    return client.post(URL, body, format="json", **headers)


def with_params(**params: Any) -> dict[str, Any]:
    body = copy.deepcopy(DOCUMENTED_GENERATE_REQUEST)
    body["generation_params"].update(params)
    return body


def test_documented_request_is_queued_as_pending(client, server):
    response = submit(client, DOCUMENTED_GENERATE_REQUEST)

    assert response.status_code == 202
    body = response.json()
    assert list(body) == ["mobilesd_job_id"]
    assert UUID_RE.match(body["mobilesd_job_id"])
    job = Job.objects.get(pk=body["mobilesd_job_id"])
    assert job.status == JobStatus.PENDING
    assert job.server == server
    assert job.generation_params == DOCUMENTED_GENERATE_REQUEST["generation_params"]


def test_every_documented_param_is_accepted_and_kept(client, server):
    body = {"target_server_alias": "Laptop", "generation_params": DOCUMENTED_STATUS_PARAMS}

    response = submit(client, body)

    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["mobilesd_job_id"])
    assert job.generation_params == DOCUMENTED_STATUS_PARAMS


def test_unknown_params_are_kept_in_the_job(client, server):
    response = submit(client, with_params(my_client_tag="phone-7", extra={"a": [1, 2]}))

    assert response.status_code == 202
    params = Job.objects.get().generation_params
    assert params["my_client_tag"] == "phone-7"
    assert params["extra"] == {"a": [1, 2]}


def test_lone_prompt_is_taken_as_positive_prompt(client, server):
    body = {"target_server_alias": "Laptop", "generation_params": {"prompt": "a red fox"}}

    response = submit(client, body)

    assert response.status_code == 202
    assert Job.objects.get().generation_params["positive_prompt"] == "a red fox"


def test_positive_prompt_wins_over_prompt(client, server):
    body = {
        "target_server_alias": "Laptop",
        "generation_params": {"prompt": "ignored", "positive_prompt": "a red fox"},
    }

    submit(client, body)

    assert Job.objects.get().generation_params["positive_prompt"] == "a red fox"


@pytest.mark.parametrize("seed", ["", -1, 0, 1806652750, 4294967295])
def test_valid_seeds_are_accepted(client, server, seed):
    assert submit(client, with_params(seed=seed, subseed=seed)).status_code == 202


def test_unknown_server_is_404_and_stores_nothing(client, server):
    before = db_snapshot()
    body = {**DOCUMENTED_GENERATE_REQUEST, "target_server_alias": "Desktop"}

    response = submit(client, body)

    error = assert_error(response, 404, "server_not_found")
    assert "Desktop" in error["message"]
    assert db_snapshot() == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"width": 32}, "generation_params.width"),
        ({"width": 8192}, "generation_params.width"),
        ({"height": "512"}, "generation_params.height"),
        ({"steps": 0}, "generation_params.steps"),
        ({"steps": 151}, "generation_params.steps"),
        ({"steps": 20.5}, "generation_params.steps"),
        ({"steps": True}, "generation_params.steps"),
        ({"cfg_scale": "7"}, "generation_params.cfg_scale"),
        ({"cfg_scale": 0.5}, "generation_params.cfg_scale"),
        ({"cfg_scale": 31}, "generation_params.cfg_scale"),
        ({"num_images": 0}, "generation_params.num_images"),
        ({"num_images": 17}, "generation_params.num_images"),
        ({"seed": "random"}, "generation_params.seed"),
        ({"seed": 1.5}, "generation_params.seed"),
        ({"seed": 2**32}, "generation_params.seed"),
        ({"seed": -2}, "generation_params.seed"),
        ({"seed": True}, "generation_params.seed"),
        ({"subseed": "x"}, "generation_params.subseed"),
        ({"restore_faces": "false"}, "generation_params.restore_faces"),
        ({"enable_hires_fix": 1}, "generation_params.enable_hires_fix"),
        ({"positive_prompt": 42}, "generation_params.positive_prompt"),
        ({"negative_prompt": ["a"]}, "generation_params.negative_prompt"),
        ({"sampler_name": {"x": 1}}, "generation_params.sampler_name"),
        ({"loras": [{"weight": 1}]}, "generation_params.loras.0.name"),
        ({"loras": [{"name": "detail", "weight": "high"}]}, "generation_params.loras.0.weight"),
    ],
)
def test_invalid_param_is_a_field_error_and_stores_nothing(client, server, params, field):
    before = db_snapshot()

    response = submit(client, with_params(**params))

    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"], error
    assert field in error["message"]
    assert db_snapshot() == before


def test_several_bad_fields_are_all_reported(client, server):
    response = submit(client, with_params(width=1, steps="many", seed="x"))

    error = assert_error(response, 400, "validation_error")
    assert {"generation_params.width", "generation_params.steps", "generation_params.seed"} <= set(
        error["fields"]
    )


def test_huge_prompt_is_refused(client, server, settings):
    prompt = "a very long prompt " * 1000  # 19 000 characters, over the 10 000 limit

    response = submit(client, with_params(positive_prompt=prompt))

    error = assert_error(response, 400, "validation_error")
    assert "generation_params.positive_prompt" in error["fields"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"generation_params": {"positive_prompt": "x"}}, "target_server_alias"),
        ({"target_server_alias": "Laptop"}, "generation_params"),
        ({"target_server_alias": "Laptop", "generation_params": {}}, "generation_params"),
        ({"target_server_alias": "Laptop", "generation_params": "x"}, "generation_params"),
        ({"target_server_alias": "Laptop", "generation_params": [1]}, "generation_params"),
        ({"target_server_alias": None, "generation_params": {"steps": 5}}, "target_server_alias"),
    ],
)
def test_missing_or_wrong_top_level_fields_are_refused(client, server, body, field):
    response = submit(client, body)

    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("body", [[1, 2], "text", 5, None])
def test_non_object_body_is_refused(client, server, body):
    response = client.post(URL, body, format="json")

    assert_error(response, 400, "validation_error")
    assert not Job.objects.exists()


def test_idempotency_key_returns_the_same_job(client, server):
    first = submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="abc-123")
    second = submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="abc-123")

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1


def test_different_idempotency_keys_make_different_jobs(client, server):
    submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="one")
    submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="two")
    submit(client, DOCUMENTED_GENERATE_REQUEST)

    assert Job.objects.count() == 3


def test_idempotency_key_reused_for_another_request_is_409(client, server):
    submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="abc")

    response = submit(client, with_params(steps=30), HTTP_IDEMPOTENCY_KEY="abc")

    assert_error(response, 409, "idempotency_key_reused")
    assert Job.objects.count() == 1


def test_idempotency_keys_are_per_api_key(client, server, anon_client, settings):
    settings.MOBILESD_ALLOW_ANONYMOUS = True
    submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="same")
    submit(anon_client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="same")

    assert Job.objects.count() == 2


def test_overlong_idempotency_key_is_refused(client, server):
    response = submit(client, DOCUMENTED_GENERATE_REQUEST, HTTP_IDEMPOTENCY_KEY="k" * 256)

    assert_error(response, 400, "validation_error")
    assert not Job.objects.exists()


def test_priority_is_stored(client, server):
    body = {**DOCUMENTED_GENERATE_REQUEST, "priority": 10}

    response = submit(client, body)

    assert response.status_code == 202
    assert Job.objects.get().priority == 10


@pytest.mark.parametrize("priority", [101, -101, "high", 1.5, True])
def test_bad_priority_is_refused(client, server, priority):
    response = submit(client, {**DOCUMENTED_GENERATE_REQUEST, "priority": priority})

    assert "priority" in assert_error(response, 400, "validation_error")["fields"]
    assert not Job.objects.exists()


def test_target_any_queues_a_job_without_a_server(client, server):
    response = submit(client, {**DOCUMENTED_GENERATE_REQUEST, "target_server_alias": "any"})

    assert response.status_code == 202
    job = Job.objects.get()
    assert (job.server, job.target_server_alias) == (None, "any")
    assert job.checkpoint_key == "pony/cyberrealisticpony_v8.safetensors"


def test_unknown_checkpoint_is_a_400_with_close_matches_when_the_cache_is_fresh(client, server):
    fresh_cache(server, "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]", "sdxl.safetensors")
    before = db_snapshot()

    response = submit(client, with_params(checkpoint_name="Pony/cyberrealisticPony_v9.safetensors"))

    error = assert_error(response, 400, "validation_error")
    (message,) = error["fields"]["generation_params.checkpoint_name"]
    assert "was not found on server 'Laptop'" in message
    assert "Did you mean: Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]?" in message
    assert db_snapshot() == before


def test_known_checkpoint_in_any_form_is_accepted_when_the_cache_is_fresh(client, server):
    fresh_cache(server, "Pony\\cyberrealisticPony_v8.safetensors [9f90c59f3a]")

    for name in ("Pony/cyberrealisticPony_v8.safetensors", "9f90c59f3a", "cyberrealisticPony_v8"):
        assert submit(client, with_params(checkpoint_name=name)).status_code == 202


def test_unknown_checkpoint_is_accepted_when_the_cache_is_stale(client, server):
    fresh_cache(server, "sdxl.safetensors")
    server.models_stale = True
    server.save()

    response = submit(client, with_params(checkpoint_name="Pony/other.safetensors"))

    assert response.status_code == 202  # checked against the live list at dispatch
