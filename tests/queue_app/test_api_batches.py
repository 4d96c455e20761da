"""The batch API: POST/GET /api/v1/batches, GET/DELETE /api/v1/batches/<id>, and cancel."""

from typing import Any

import pytest
from rest_framework.test import APIClient

from queue_app.models import Batch, Job, JobStatus
from servers_app.models import Server
from tests.queue_app.test_api_images import add_image, png_bytes
from tests.support import UUID_RE, assert_error, db_snapshot, fresh_cache, new_key

URL = "/api/v1/batches"
BASE = {"positive_prompt": "a lighthouse", "steps": 4, "width": 64, "height": 64}
MATRIX: dict[str, Any] = {
    "target_server_alias": "Laptop",
    "generation_params": BASE,
    "axes": [
        {"field": "checkpoint_name", "values": ["a.safetensors", "b.safetensors", "c.safetensors"]},
        {"field": "seed", "values": [1, 2]},
    ],
}


def post(client, body: Any, **headers: str):
    return client.post(URL, body, format="json", **headers)


def client_of(username: str, scope: str = "client") -> APIClient:
    _, raw = new_key(f"{username} phone", username=username, scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def jobs_of(body: dict[str, Any]) -> list[Job]:
    rows = {job.pk: job for job in Job.objects.filter(batch_id=body["batch_id"])}
    return [
        rows[next(pk for pk in rows if str(pk) == job_id)] for job_id in body["mobilesd_job_ids"]
    ]


def test_items_make_one_job_each_in_their_order(client, server):
    body = {
        "target_server_alias": "Laptop",
        "name": "three prompts",
        "priority": 3,
        "items": [{**BASE, "positive_prompt": p} for p in ("a cat", "a dog", "a bird")],
    }

    response = post(client, body)

    assert response.status_code == 202
    answer = response.json()
    assert list(answer) == ["batch_id", "mobilesd_job_ids"]
    assert UUID_RE.match(answer["batch_id"])
    jobs = jobs_of(answer)
    assert [job.prompt for job in jobs] == ["a cat", "a dog", "a bird"]
    assert [job.batch_index for job in jobs] == [0, 1, 2]
    assert {(job.status, job.server, job.priority) for job in jobs} == {
        (JobStatus.PENDING, server, 3)
    }
    batch = Batch.objects.get()
    assert (batch.name, batch.job_count, batch.owner.username) == ("three prompts", 3, "owner")
    status = client.get(f"/api/v1/queue/jobs/{jobs[0].pk}/status").json()
    assert status["batch_id"] == answer["batch_id"]


def test_items_take_the_base_generation_params_under_their_own(client, server):
    body = {
        "target_server_alias": "Laptop",
        "generation_params": {**BASE, "negative_prompt": "blurry"},
        "items": [{"positive_prompt": "a cat"}, {"positive_prompt": "a dog", "steps": 9}],
    }

    jobs = jobs_of(post(client, body).json())

    assert [(j.prompt, j.generation_params["steps"]) for j in jobs] == [("a cat", 4), ("a dog", 9)]
    assert {j.generation_params["negative_prompt"] for j in jobs} == {"blurry"}


def test_axes_make_every_combination_the_first_axis_varying_slowest(client, server):
    jobs = jobs_of(post(client, MATRIX).json())

    combos = [
        (j.generation_params["checkpoint_name"][0], j.generation_params["seed"]) for j in jobs
    ]
    assert combos == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    assert all(j.generation_params["positive_prompt"] == "a lighthouse" for j in jobs)


def test_jobs_queue_grouped_by_checkpoint_the_loaded_one_first(client, server):
    Server.objects.filter(pk=server.pk).update(loaded_checkpoint="c.safetensors [0123456789]")
    body = {
        "target_server_alias": "Laptop",
        "items": [{**BASE, "checkpoint_name": f"{n}.safetensors"} for n in "abcabca"],
    }

    jobs = jobs_of(post(client, body).json())

    queued = Job.objects.order_by("created_at")
    assert [job.generation_params["checkpoint_name"][0] for job in queued] == list("ccaaabb")
    # The answer keeps the items' order.
    assert [job.generation_params["checkpoint_name"][0] for job in jobs] == list("abcabca")


def test_a_lora_weight_axis_sets_the_weight_of_the_lora_it_names(client, server):
    body = {
        "target_server_alias": "Laptop",
        "generation_params": {**BASE, "loras": [{"name": "detail", "weight": 1}]},
        "axes": [
            {"field": "lora_weight", "lora": "detail", "values": [0.2, 0.8]},
            {"field": "lora_weight", "lora": "style", "values": [1.0]},
            {"field": "prompt", "values": ["a cat"]},
        ],
    }

    jobs = jobs_of(post(client, body).json())

    assert [j.generation_params["loras"] for j in jobs] == [
        [{"name": "detail", "weight": 0.2}, {"name": "style", "weight": 1.0}],
        [{"name": "detail", "weight": 0.8}, {"name": "style", "weight": 1.0}],
    ]
    assert {j.prompt for j in jobs} == {"a cat"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"items": [BASE, {**BASE, "steps": 0}, BASE]},
            "items.1.steps",
        ),
        (
            {"generation_params": BASE, "axes": [{"field": "cfg_scale", "values": [7, "x"]}]},
            "axes.0.values.1",
        ),
        (
            {"generation_params": BASE, "axes": [{"field": "lora_weight", "values": [1]}]},
            "axes.0.lora",
        ),
        (
            {"generation_params": {**BASE, "steps": "9"}, "axes": [MATRIX["axes"][1]]},
            "generation_params.steps",
        ),
        ({"axes": [MATRIX["axes"][1]]}, "generation_params"),
        ({"generation_params": BASE, "axes": [{"field": "loras", "values": [1]}]}, "axes.0.field"),
        ({"generation_params": BASE, "axes": [MATRIX["axes"][1]] * 2}, "axes.1"),
        ({"generation_params": BASE}, "non_field_errors"),
        ({"items": [BASE], "generation_params": BASE, "axes": MATRIX["axes"]}, "non_field_errors"),
        ({"items": []}, "items"),
        (
            {"items": [BASE], "expires_after": 10, "expires_at": "2030-01-01T00:00:00Z"},
            "expires_at",
        ),
    ],
)
def test_invalid_batches_are_refused_saying_where_and_make_nothing(client, server, body, field):
    before = db_snapshot()

    response = post(client, {"target_server_alias": "Laptop", **body})

    error = assert_error(response, 400, "validation_error")
    assert field in error["fields"], error
    assert db_snapshot() == before


def test_more_jobs_than_the_limit_are_refused(client, server, settings):
    settings.MOBILESD_BATCH_MAX_JOBS = 5

    response = post(client, MATRIX)

    error = assert_error(response, 400, "validation_error")
    assert "That is 6 jobs; a batch makes at most 5" in error["fields"]["axes"][0]
    assert not Job.objects.exists()


def test_a_checkpoint_the_server_lacks_is_refused_at_its_axis_value(client, server):
    fresh_cache(server, "a.safetensors [0123456789]", "c.safetensors [9876543210]")
    before = db_snapshot()

    response = post(client, MATRIX)

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["axes.0.values.1"]
    assert "was not found on server 'Laptop'" in error["fields"]["axes.0.values.1"][0]
    assert db_snapshot() == before


def test_a_checkpoint_the_server_lacks_is_refused_at_its_item(client, server):
    fresh_cache(server, "a.safetensors [0123456789]")
    items = [{**BASE, "checkpoint_name": name} for name in ("a", "a", "z", "z")]

    response = post(client, {"target_server_alias": "Laptop", "items": items})

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == ["items.2.checkpoint_name"]


def test_an_unknown_server_is_404(client, server):
    response = post(client, {**MATRIX, "target_server_alias": "Nowhere"})

    assert_error(response, 404, "server_not_found")
    assert not Batch.objects.exists()


def test_an_any_batch_queues_for_any_server(client, server):
    jobs = jobs_of(post(client, {**MATRIX, "target_server_alias": "any"}).json())

    assert {(job.server, job.target_server_alias) for job in jobs} == {(None, "any")}


def test_a_repeated_submit_with_its_idempotency_key_returns_the_same_batch(client, server):
    first = post(client, MATRIX, HTTP_IDEMPOTENCY_KEY="plot-1")
    again = post(client, MATRIX, HTTP_IDEMPOTENCY_KEY="plot-1")

    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (Batch.objects.count(), Job.objects.count()) == (1, 6)


def test_an_idempotency_key_reused_for_another_batch_is_a_409(client, server):
    post(client, MATRIX, HTTP_IDEMPOTENCY_KEY="plot-1")

    response = post(
        client,
        {**MATRIX, "priority": 0, "generation_params": {**BASE, "steps": 9}},
        HTTP_IDEMPOTENCY_KEY="plot-1",
    )

    assert_error(response, 409, "idempotency_key_reused")
    assert Job.objects.count() == 6


def test_a_batch_shows_its_counts_jobs_and_images(client, server):
    answer = post(client, MATRIX).json()
    done, failed, *_ = jobs_of(answer)
    Job.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED)
    Job.objects.filter(pk=failed.pk).update(status=JobStatus.FAILED)
    add_image(done, png_bytes((64, 64)))

    body = client.get(f"{URL}/{answer['batch_id']}").json()

    assert body["counts"] == {
        "pending": 4,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert body["finished"] is False
    assert (body["job_count"], body["target_server_alias"]) == (6, "Laptop")
    assert body["axes"] == MATRIX["axes"]
    assert [job["mobilesd_job_id"] for job in body["jobs"]] == answer["mobilesd_job_ids"]
    assert [job["item"] for job in body["jobs"]] == list(range(6))
    (image,) = body["images"]
    assert image["mobilesd_job_id"] == str(done.pk)
    assert client.get(image["url"]).status_code == 200


def test_the_list_shows_the_newest_batch_first_with_counts(client, server):
    post(client, {"target_server_alias": "Laptop", "name": "old", "items": [BASE]})
    post(client, {**MATRIX, "name": "new"})

    body = client.get(URL, {"limit": 1}).json()

    assert (body["total"], body["limit"], body["offset"]) == (2, 1, 0)
    (batch,) = body["batches"]
    assert (batch["name"], batch["counts"]["pending"], batch["finished"]) == ("new", 6, False)


def test_cancel_cancels_the_active_jobs_of_the_batch_only(client, server):
    answer = post(client, MATRIX).json()
    other = post(client, MATRIX).json()
    done = jobs_of(answer)[0]
    Job.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED)

    response = client.post(f"{URL}/{answer['batch_id']}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert body["cancelled"] == 5
    assert body["batch"]["counts"]["cancelled"] == 5
    assert body["batch"]["finished"] is True
    assert Job.objects.get(pk=done.pk).status == JobStatus.COMPLETED
    assert {j.status for j in jobs_of(other)} == {JobStatus.PENDING}
    assert client.post(f"{URL}/{answer['batch_id']}/cancel").json()["cancelled"] == 0


def test_delete_removes_the_batch_its_jobs_and_their_image_files(
    client, server, django_capture_on_commit_callbacks
):
    answer = post(client, MATRIX).json()
    done = jobs_of(answer)[0]
    Job.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED)
    image = add_image(done, png_bytes((64, 64)))
    storage, name = image.file.storage, image.file.name

    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"{URL}/{answer['batch_id']}")

    assert response.status_code == 200
    assert "6 job(s)" in response.json()["message"]
    assert not Batch.objects.exists()
    assert not Job.objects.exists()
    assert not storage.exists(name)
    assert_error(client.get(f"{URL}/{answer['batch_id']}"), 404, "batch_not_found")


@pytest.mark.parametrize("batch_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000000"])
def test_an_unknown_batch_is_404(client, db, batch_id):
    assert_error(client.get(f"{URL}/{batch_id}"), 404, "batch_not_found")


def test_a_client_key_sees_and_changes_only_its_own_users_batches(db, server):
    alice, bob, admin = client_of("alice"), client_of("bob"), client_of("root", "admin")
    mine = post(alice, MATRIX).json()["batch_id"]
    theirs = post(bob, MATRIX).json()["batch_id"]

    assert [b["batch_id"] for b in alice.get(URL).json()["batches"]] == [mine]
    assert {b["batch_id"] for b in admin.get(URL).json()["batches"]} == {mine, theirs}
    for request in (
        lambda: alice.get(f"{URL}/{theirs}"),
        lambda: alice.post(f"{URL}/{theirs}/cancel"),
        lambda: alice.delete(f"{URL}/{theirs}"),
    ):
        assert_error(request(), 404, "batch_not_found")
    assert {j.status for j in Job.objects.filter(batch_id=theirs)} == {JobStatus.PENDING}
    assert alice.get(f"{URL}/{mine}").status_code == 200
    assert admin.post(f"{URL}/{theirs}/cancel").json()["cancelled"] == 6
    # The batch's jobs are the user's own jobs, as any other.
    job_id = Job.objects.filter(batch_id=mine).values_list("pk", flat=True)[0]
    assert_error(bob.get(f"/api/v1/queue/jobs/{job_id}/status"), 404, "job_not_found")


def test_a_large_batch_is_written_in_a_few_queries(
    client, server, settings, django_assert_max_num_queries
):
    settings.MOBILESD_BATCH_MAX_JOBS = 500
    body = {
        "target_server_alias": "Laptop",
        "generation_params": BASE,
        "axes": [
            {"field": "checkpoint_name", "values": [f"m{i}.safetensors" for i in range(5)]},
            {"field": "seed", "values": list(range(100))},
        ],
    }

    with django_assert_max_num_queries(20):
        response = post(client, body)

    assert response.status_code == 202
    assert Job.objects.count() == 500
