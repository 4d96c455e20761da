"""Pausing the queue for real: a Celery worker on PostgreSQL and Redis, a Forge simulator
over HTTP. The running job finishes, nothing new starts while paused, resume runs the rest."""

import pytest
from model_bakery import baker

from queue_app.models import Job, JobStatus
from queue_app.tasks import nudge
from servers_app.models import Server
from tests.integration.procs import wait_until
from tests.integration.test_engine import assert_all_completed, received, submit, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_pause_lets_the_running_job_finish_and_starts_nothing_until_resumed(engine, sims, client):
    sim = sims(seconds_per_step=0.05)
    server = baker.make(Server, alias="pause-laptop", api_url=sim.url)
    first = submit("pause-laptop", steps=20)  # 1 s on the server
    rest = [submit("pause-laptop") for _ in range(2)]
    sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == str(first.pk), timeout=15)

    assert client.post("/api/v1/queue/pause").json()["paused"] is True

    [first] = wait_finished([first])
    assert first.status == JobStatus.COMPLETED
    # The worker's loop has ended: the job it had reserved to run next is given back.
    wait_until(
        lambda: (
            not Job.objects.filter(pk__in=[j.pk for j in rest], lease_token__isnull=False).exists()
        ),
        timeout=10,
        what="the reservation to be given back",
    )
    # A job submitted while paused waits too; a nudge (a submit sends none to a paused
    # server) makes the worker look, and its run_server ends without a claim.
    during = submit("pause-laptop")
    log_start = len(engine.workers["w1"].output())
    nudge([server.pk])
    wait_until(
        lambda: any(
            "queue_app.tasks.run_server[" in line and "succeeded" in line
            for line in engine.workers["w1"].output()[log_start:].splitlines()
        ),
        timeout=10,
        what="the worker to handle the nudge",
    )
    status = client.get(f"/api/v1/queue/jobs/{during.pk}/status").json()
    assert (status["status"], status["queue"]["paused"]) == ("pending", True)
    assert status["queue"]["paused_at"] is not None
    assert received(sim) == {str(first.pk): 1}
    assert [j.status for j in Job.objects.filter(pk__in=[j.pk for j in rest])] == [
        JobStatus.PENDING
    ] * 2

    assert client.post("/api/v1/queue/resume").json()["paused"] is False

    assert_all_completed(wait_finished([*rest, during]))
    assert received(sim) == {str(job.pk): 1 for job in [first, *rest, during]}
    started = [e["task_id"] for e in sim.events.of_type("txt2img_received")]
    assert started == [str(job.pk) for job in [first, *rest, during]]


def test_a_paused_server_waits_while_another_runs_the_any_jobs(engine, sims, client):
    paused_sim, other_sim = sims(), sims()
    baker.make(Server, alias="paused-box", api_url=paused_sim.url)
    baker.make(Server, alias="other-box", api_url=other_sim.url)
    assert client.post("/api/v1/servers/paused-box/pause").json()["server"]["paused"] is True

    pinned = submit("paused-box")
    anywhere = [submit("any") for _ in range(3)]

    assert_all_completed(wait_finished(anywhere))
    assert Job.objects.get(pk=pinned.pk).status == JobStatus.PENDING
    assert received(paused_sim) == {}
    assert set(received(other_sim)) == {str(job.pk) for job in anywhere}

    client.post("/api/v1/servers/paused-box/resume")

    assert_all_completed(wait_finished([pinned]))
    assert received(paused_sim) == {str(pinned.pk): 1}
