"""Extensions for real (issue 16): a Celery worker and beat on PostgreSQL and Redis, jobs
submitted through the API, Forge simulators over HTTP with ADetailer, ControlNet and VAEs
present or absent."""

from typing import Any

import pytest

from integrations.forge.simulator import SimModel
from queue_app.models import Job, JobStatus
from servers_app.models import Server
from tests.integration.test_engine import received, wait_finished
from tests.support import assert_error, checked_server, db_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MODELS = [SimModel("sd_xl_base_1.0.safetensors")]
ADETAILER = {
    "ADetailer": {
        "args": [
            True,
            False,
            {"ad_model": "face_yolov8n.pt", "ad_prompt": "detailed face", "ad_confidence": 0.3},
            {"ad_model": "hand_yolov8n.pt"},
        ]
    }
}


def generate(client, target: str, **params: Any):
    params = {"positive_prompt": "a lighthouse", "steps": 4, "width": 64, "height": 64, **params}
    return client.post(
        "/api/v1/generate",
        {"target_server_alias": target, "generation_params": params},
        format="json",
    )


def test_a_job_with_an_adetailer_unit_reaches_the_server_as_sent(engine, sims, client):
    sim = sims(models=MODELS, adetailer=True)
    checked_server(sim.url, alias="Laptop")

    response = generate(client, "Laptop", alwayson_scripts=ADETAILER)

    assert response.status_code == 202, response.json()
    (job,) = wait_finished([Job.objects.get(pk=response.json()["mobilesd_job_id"])])
    assert job.status == JobStatus.COMPLETED, job.result_details
    (event,) = sim.events.of_type("txt2img_received")
    assert event["alwayson_scripts"] == ADETAILER
    assert event["task_id"] == str(job.pk)


def test_a_job_naming_a_script_the_server_lacks_is_refused_at_submit(engine, sims, client):
    sim = sims(models=MODELS)  # no ADetailer installed
    checked_server(sim.url, alias="Laptop")
    before = db_snapshot()

    response = generate(client, "Laptop", alwayson_scripts=ADETAILER)

    body = assert_error(response, 400, "script_not_found")
    assert "Server 'Laptop' has no script 'ADetailer'." in body["message"]
    assert db_snapshot() == before
    assert not sim.events.of_type("txt2img_received")


def test_an_any_job_with_a_vae_only_one_of_two_servers_has_runs_there(engine, sims, client):
    plain = sims(models=MODELS, modules=["VAE/sdxl_vae.safetensors"])
    with_vae = sims(models=MODELS, modules=["VAE/sdxl_vae.safetensors", "VAE/anime_vae.pt"])
    checked_server(plain.url, alias="Plain")
    checked_server(with_vae.url, alias="Special")

    jobs = []
    for _ in range(3):
        response = generate(client, "any", vae="anime_vae.pt")
        assert response.status_code == 202, response.json()
        jobs.append(Job.objects.get(pk=response.json()["mobilesd_job_id"]))

    rows = wait_finished(jobs)
    assert [row.status for row in rows] == [JobStatus.COMPLETED] * 3, [
        row.result_details for row in rows
    ]
    special = Server.objects.get(alias="Special")
    assert {row.server_id for row in rows} == {special.pk}
    assert received(plain) == {}
    assert received(with_vae) == {str(job.pk): 1 for job in jobs}
    modules = {
        tuple(event["override_settings"]["forge_additional_modules"])
        for event in with_vae.events.of_type("txt2img_received")
    }
    assert modules == {("/opt/sd/models/VAE/anime_vae.pt",)}
