"""Queue control (queue_app.control): pause and resume the queue and servers, move and
change pending jobs, cancel many jobs; their API and what the claim makes of them."""

import pytest
from django.utils import timezone
from model_bakery import baker
from rest_framework.test import APIClient

from queue_app import dispatch
from queue_app.models import Batch, Job, JobStatus, QueueState
from servers_app.models import Server
from tests.queue_app.test_dispatch import queue, running_with_next
from tests.support import assert_error, key_client


@pytest.fixture
def online(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


@pytest.fixture
def alice(db) -> APIClient:
    return key_client("alice")


@pytest.fixture
def bob(db) -> APIClient:
    return key_client("bob")


def owned(server: Server | None, username: str, **fields) -> Job:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username)
    (job,) = queue(server, owner=user, **fields)
    return job


def pause_queue(client: APIClient) -> dict:
    response = client.post("/api/v1/queue/pause")
    assert response.status_code == 200
    return response.json()


# --- pause and resume: what the claim does -------------------------------------------------


def test_a_paused_queue_claims_nothing(online, client):
    queue(online, n=2)
    pause_queue(client)

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert not dispatch.server_may_claim(server_id=online.pk)
    assert Job.objects.filter(status=JobStatus.PENDING).count() == 2


def test_a_paused_server_claims_nothing_and_its_any_jobs_go_elsewhere(online, client):
    desktop = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2", is_online=True)
    queue(online)
    (anywhere,) = queue(None)

    assert client.post("/api/v1/servers/Laptop/pause").status_code == 200

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert not dispatch.server_may_claim(server_id=online.pk)
    assert dispatch.job_claim_next(server_id=desktop.pk).job_id == anywhere.pk


def test_a_reservation_made_before_a_pause_does_not_start(online, client):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)
    assert reserved is not None

    pause_queue(client)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_a_reservation_does_not_start_on_a_server_paused_meanwhile(online, client):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)

    client.post("/api/v1/servers/Laptop/pause")

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).status == JobStatus.PENDING


def test_resume_lets_the_claim_take_jobs_again_and_nudges_the_workers(
    online, client, published, django_capture_on_commit_callbacks
):
    (job,) = queue(online)
    pause_queue(client)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/queue/resume")

    assert response.json()["paused"] is False
    assert [args for name, args, _ in published if name.endswith("run_server")] == [(online.pk,)]
    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_resuming_a_server_nudges_it(online, client, published, django_capture_on_commit_callbacks):
    queue(online)
    client.post("/api/v1/servers/Laptop/pause")

    with django_capture_on_commit_callbacks(execute=True):
        body = client.post("/api/v1/servers/Laptop/resume").json()

    assert body["server"]["paused"] is False
    assert body["server"]["paused_at"] is None
    assert [args for name, args, _ in published if name.endswith("run_server")] == [(online.pk,)]


def test_reconcile_nudges_no_server_while_the_queue_is_paused(online, client):
    from queue_app.tasks import servers_with_work

    queue(online)
    assert servers_with_work() == [online.pk]
    pause_queue(client)
    assert servers_with_work() == []


# --- pause and resume: the API ---------------------------------------------------------------


def test_pause_answers_since_when_and_a_second_pause_keeps_it(db, client):
    first = pause_queue(client)
    second = pause_queue(client)

    assert first["paused"] is True
    assert first["paused_at"] is not None
    assert second["paused_at"] == first["paused_at"]
    assert QueueState.objects.get().paused_at is not None


def test_queue_state_lists_the_paused_servers(online, client, alice):
    baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2")
    client.post("/api/v1/servers/Laptop/pause")

    body = alice.get("/api/v1/queue").json()

    assert body["paused"] is False
    assert body["paused_at"] is None
    assert [server["alias"] for server in body["servers"]] == ["Laptop"]
    assert body["servers"][0]["paused_at"]


def test_a_server_shows_whether_it_is_paused(online, client):
    assert client.get("/api/v1/servers/Laptop").json()["paused"] is False

    client.post("/api/v1/servers/Laptop/pause")

    server = client.get("/api/v1/servers/Laptop").json()
    assert server["paused"] is True
    assert server["paused_at"] is not None


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/queue/pause",
        "/api/v1/queue/resume",
        "/api/v1/servers/Laptop/pause",
        "/api/v1/servers/Laptop/resume",
    ],
)
def test_only_an_admin_pauses_or_resumes(online, alice, path):
    assert_error(alice.post(path), 403, "admin_scope_required")
    assert not QueueState.objects.exists()
    assert Server.objects.get(pk=online.pk).paused_at is None


def test_pausing_an_unknown_server_is_a_404(db, client):
    assert_error(client.post("/api/v1/servers/Nope/pause"), 404, "server_not_found")


def test_a_pending_jobs_status_says_the_queue_and_its_server_are_paused(online, client):
    (job,) = queue(online)

    before = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["queue"]
    pause_queue(client)
    client.post("/api/v1/servers/Laptop/pause")
    after = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["queue"]

    assert before == {
        "paused": False,
        "paused_at": None,
        "server_paused": False,
        "server_paused_at": None,
    }
    assert after["paused"] is True
    assert after["paused_at"] is not None
    assert after["server_paused"] is True
    assert after["server_paused_at"] is not None


def test_a_finished_jobs_status_has_no_queue(online, client):
    (job,) = queue(online, status=JobStatus.COMPLETED)

    assert client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()["queue"] is None


def test_the_job_list_reads_the_queues_pause_once(online, client, django_assert_max_num_queries):
    queue(online, n=5)
    pause_queue(client)
    client.get("/api/v1/queue/jobs")  # warm up (key lookup caches)

    with django_assert_max_num_queries(6):
        jobs = client.get("/api/v1/queue/jobs").json()["jobs"]

    assert [job["queue"]["paused"] for job in jobs] == [True] * 5


# --- move ------------------------------------------------------------------------------------


def move(api: APIClient, job: Job, position: str):
    return api.post(f"/api/v1/queue/jobs/{job.pk}/move", {"position": position}, format="json")


def test_move_to_the_top_makes_the_job_the_next_claim(online, client):
    jobs = queue(online, n=3)
    queue(None, priority=3)  # an "any" job the server would take first

    response = move(client, jobs[2], "top")

    assert response.status_code == 200
    assert response.json()["job"]["priority"] == 4
    assert dispatch.job_claim_next(server_id=online.pk).job_id == jobs[2].pk


def test_move_to_the_bottom_makes_the_job_the_last(online, client):
    jobs = queue(online, n=3)

    assert move(client, jobs[0], "bottom").json()["job"]["priority"] == -1

    claimed = []
    for _ in range(3):  # one slot: each claimed job finishes before the next claim
        claim = dispatch.job_claim_next(server_id=online.pk)
        Job.objects.filter(pk=claim.job_id).update(status=JobStatus.COMPLETED)
        claimed.append(claim)
    assert claimed[-1].job_id == jobs[0].pk


def test_a_clients_move_ranks_only_among_its_own_jobs(online, alice):
    owned(online, "bob", priority=50)
    mine = owned(online, "alice")
    owned(online, "alice", priority=2)

    body = move(alice, mine, "top").json()

    assert body["job"]["priority"] == 3  # above its own, still behind bob's


def test_a_clients_move_stays_within_the_submit_priorities(online, alice):
    mine = owned(online, "alice")
    owned(online, "alice", priority=100)

    assert move(alice, mine, "top").json()["job"]["priority"] == 100


def test_an_admins_move_may_go_past_the_submit_priorities(online, client):
    job = owned(online, "alice")
    owned(online, "bob", priority=100)

    assert move(client, job, "top").json()["job"]["priority"] == 101


def test_another_users_job_cannot_be_moved_by_a_client(online, bob):
    job = owned(online, "alice")

    assert_error(move(bob, job, "top"), 404, "job_not_found")


def test_only_a_pending_job_moves(online, client):
    (job,) = queue(online, status=JobStatus.PROCESSING)

    assert_error(move(client, job, "top"), 409, "job_not_pending")


def test_move_needs_top_or_bottom(online, client):
    (job,) = queue(online)

    assert_error(move(client, job, "middle"), 400, "validation_error")


def test_moving_a_reserved_job_gives_its_reservation_back(online, client):
    running, (following, _) = running_with_next(online, n=2)
    reserved = dispatch.job_reserve_next(running=running)
    assert reserved.job_id == following.pk

    move(client, following, "bottom")

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    assert Job.objects.get(pk=following.pk).lease_token is None


# --- edit ------------------------------------------------------------------------------------


def edit(api: APIClient, job: Job, body: dict):
    return api.patch(f"/api/v1/queue/jobs/{job.pk}", body, format="json")


def test_edit_changes_the_keys_sent_and_keeps_the_others(online, client):
    (job,) = queue(online, checkpoint="old.safetensors")

    response = edit(
        client, job, {"generation_params": {"steps": 12, "checkpoint_name": "Pony/new"}}
    )

    assert response.status_code == 200
    assert response.json()["generation_params"]["steps"] == 12
    job.refresh_from_db()
    assert job.generation_params == {
        "positive_prompt": "x",
        "checkpoint_name": "Pony/new",
        "steps": 12,
    }
    assert job.checkpoint_key == "pony/new"


def test_edit_recomputes_the_loras_the_scheduler_matches(online, client):
    (job,) = queue(online)

    edit(client, job, {"generation_params": {"loras": [{"name": "Ink", "weight": 0.5}]}})

    assert Job.objects.get(pk=job.pk).lora_keys == ["ink"]


def test_edit_sets_the_priority(online, client):
    (job,) = queue(online)

    assert edit(client, job, {"priority": 7}).json()["priority"] == 7


def test_edit_validates_as_a_submit_does(online, client):
    (job,) = queue(online)

    body = assert_error(
        edit(client, job, {"generation_params": {"steps": 0}}), 400, "validation_error"
    )

    assert "generation_params" in str(body["fields"])
    assert Job.objects.get(pk=job.pk).generation_params == {
        "positive_prompt": "x",
        "checkpoint_name": "",
    }


@pytest.mark.parametrize("body", [{}, {"priority": 101}, {"priority": "5"}])
def test_edit_refuses_an_empty_or_bad_change(online, client, body):
    (job,) = queue(online)

    assert_error(edit(client, job, body), 400, "validation_error")


def test_edit_refuses_a_checkpoint_a_fresh_cache_does_not_list(online, client):
    from servers_app.models import CachedModel, ModelKind

    Server.objects.filter(pk=online.pk).update(models_refreshed_at=timezone.now())
    baker.make(
        CachedModel,
        server=online,
        kind=ModelKind.CHECKPOINT,
        title="real.safetensors",
        name="real",
        relative_path="real.safetensors",
        lookup_key="real",
        stem_key="real",
        identity="real",
    )
    (job,) = queue(online)

    response = edit(client, job, {"generation_params": {"checkpoint_name": "missing"}})

    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize("status", [JobStatus.PROCESSING, JobStatus.COMPLETED])
def test_a_started_job_cannot_be_edited(online, client, status):
    (job,) = queue(online, status=status)

    assert_error(edit(client, job, {"priority": 3}), 409, "job_not_pending")


def test_an_edit_racing_a_claim_loses_to_it(online, client, monkeypatch):
    """The job is claimed between the edit's read and its write: the write is refused."""
    from queue_app import control

    (job,) = queue(online)
    read = control.job_get

    def read_then_claimed(**kwargs):
        found = read(**kwargs)
        dispatch.job_claim_next(server_id=online.pk)
        return found

    monkeypatch.setattr(control, "job_get", read_then_claimed)

    assert_error(edit(client, job, {"priority": 3}), 409, "job_not_pending")
    assert Job.objects.get(pk=job.pk).priority == 0


def test_editing_a_reserved_job_makes_the_worker_claim_it_afresh(online, client):
    running, (following,) = running_with_next(online)
    reserved = dispatch.job_reserve_next(running=running)

    edit(client, following, {"generation_params": {"steps": 3}})

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False
    dispatch.job_unreserve(reserved=reserved)
    claim = dispatch.job_claim_next(server_id=online.pk, finishing=running.job_id)
    assert claim.job_id == following.pk
    assert claim.job.generation_params["steps"] == 3


def test_a_client_cannot_edit_another_users_job(online, bob):
    job = owned(online, "alice")

    assert_error(edit(bob, job, {"priority": 3}), 404, "job_not_found")


# --- cancel many -----------------------------------------------------------------------------


def cancel(api: APIClient, **body):
    return api.post("/api/v1/queue/cancel", body, format="json")


def statuses(*jobs: Job) -> list[str]:
    return [Job.objects.get(pk=job.pk).status for job in jobs]


def test_cancel_mine_cancels_only_my_pending_jobs(online, alice):
    mine = [owned(online, "alice"), owned(None, "alice")]
    running = owned(online, "alice", status=JobStatus.PROCESSING)
    theirs = owned(online, "bob")

    response = cancel(alice)

    assert response.json() == {"cancelled": 2}
    assert statuses(*mine) == [JobStatus.CANCELLED] * 2
    assert statuses(running, theirs) == [JobStatus.PROCESSING, JobStatus.PENDING]


def test_cancel_of_one_servers_queue(online, client):
    desktop = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2")
    laptop_job, desktop_job, any_job = queue(online), queue(desktop), queue(None)

    assert cancel(client, scope="all", server="Laptop").json() == {"cancelled": 1}
    assert cancel(client, scope="all", server="any").json() == {"cancelled": 1}
    assert statuses(*laptop_job, *desktop_job, *any_job) == [
        JobStatus.CANCELLED,
        JobStatus.PENDING,
        JobStatus.CANCELLED,
    ]


def test_cancel_of_an_unknown_server_is_a_404(online, client):
    assert_error(cancel(client, server="Nope"), 404, "server_not_found")


def test_cancel_of_one_batch_leaves_the_others_and_hides_anothers_batch(online, alice, bob):
    alice_user = owned(online, "alice").owner
    batch = baker.make(Batch, owner=alice_user, server=online, target_server_alias="Laptop")
    in_batch = [owned(online, "alice", batch=batch), owned(online, "alice", batch=batch)]
    outside = owned(online, "alice")

    assert_error(cancel(bob, batch_id=str(batch.pk)), 404, "batch_not_found")
    assert statuses(*in_batch) == [JobStatus.PENDING] * 2
    assert cancel(alice, batch_id=str(batch.pk)).json() == {"cancelled": 2}
    assert statuses(*in_batch, outside) == [
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.PENDING,
    ]


def test_cancel_all_is_for_an_admin(online, client, alice):
    theirs = owned(online, "bob")

    assert_error(cancel(alice, scope="all"), 403, "admin_scope_required")
    assert statuses(theirs) == [JobStatus.PENDING]
    assert cancel(client, scope="all").json() == {"cancelled": 1}


def test_cancel_including_running_jobs_interrupts_them(
    online, client, published, django_capture_on_commit_callbacks
):
    (running,) = queue(online, status=JobStatus.PROCESSING, forge_session_hash="task-1")
    (waiting,) = queue(online)

    with django_capture_on_commit_callbacks(execute=True):
        response = cancel(client, scope="all", include_processing=True)

    assert response.json() == {"cancelled": 2}
    assert statuses(running, waiting) == [JobStatus.CANCELLED] * 2
    assert [args for name, args, _ in published if name.endswith("interrupt_task")] == [
        (online.pk, "task-1")
    ]


@pytest.mark.parametrize(
    "body", [{"scope": "others"}, {"include_processing": "yes"}, {"server": 3}]
)
def test_cancel_refuses_bad_input(online, client, body):
    assert_error(cancel(client, **body), 400, "validation_error")
