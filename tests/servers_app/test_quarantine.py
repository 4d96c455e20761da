"""Quarantine of a server whose jobs keep failing (servers_app.quarantine): its state
transitions, what it claims meanwhile, the probe that brings it back, and what counts."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from model_bakery import baker

from core_app.scopes import local_user
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app import dispatch
from queue_app.models import Job, JobStatus
from queue_app.services import job_submit
from queue_app.tasks import reconcile, servers_with_work
from servers_app import tasks
from servers_app.models import Server
from servers_app.quarantine import (
    server_lift_quarantine,
    server_note_job_failure,
    server_note_job_success,
)
from tests.support import checked_server, run_queue_in_thread, submit


@pytest.fixture
def online(db, settings) -> Server:
    settings.MOBILESD_QUARANTINE_AFTER_FAILURES = 3
    settings.MOBILESD_QUARANTINE_COOLDOWN_SECONDS = 60
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:1", is_online=True)


def fail(server: Server, times: int, error: str = "HTTP 500: OutOfMemoryError") -> list[bool]:
    return [server_note_job_failure(server_id=server.pk, error=error) for _ in range(times)]


def test_the_limits_failures_in_a_row_quarantine_the_server_saying_why(online):
    assert fail(online, 3) == [False, False, True]

    online.refresh_from_db()
    assert online.quarantined_at is not None
    assert online.state == "quarantined"
    assert "3 jobs in a row failed" in online.quarantine_reason
    assert "OutOfMemoryError" in online.quarantine_reason


def test_fewer_failures_do_not(online):
    fail(online, 2)

    online.refresh_from_db()
    assert online.quarantined_at is None
    assert online.consecutive_failures == 2


def test_a_success_resets_the_count(online):
    fail(online, 2)
    server_note_job_success(server_id=online.pk)
    fail(online, 2)

    online.refresh_from_db()
    assert online.quarantined_at is None
    assert online.consecutive_failures == 2


def test_zero_never_quarantines(online, settings):
    settings.MOBILESD_QUARANTINE_AFTER_FAILURES = 0

    assert not any(fail(online, 10))
    assert Server.objects.get(pk=online.pk).quarantined_at is None


def test_a_quarantined_server_claims_nothing_and_its_pinned_jobs_wait(online):
    (job,) = [submit()]
    fail(online, 3)

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert dispatch.server_may_claim(server_id=online.pk) is False
    assert servers_with_work() == []
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING


def test_any_jobs_go_to_the_other_servers(online):
    other = baker.make(Server, alias="Desktop", api_url="http://127.0.0.1:2", is_online=True)
    job, _ = job_submit(owner=local_user(), target_server_alias="any", generation_params={})
    fail(online, 3)

    assert servers_with_work() == [other.pk]
    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert dispatch.job_claim_next(server_id=other.pk).job_id == job.pk


def test_a_reserved_job_does_not_start_once_its_server_is_quarantined(online):
    submit()
    submit()
    running = dispatch.job_claim_next(server_id=online.pk)
    reserved = dispatch.job_reserve_next(running=running)
    fail(online, 3)

    assert dispatch.job_start_reserved(reserved=reserved, finishing=running) is False


def test_the_quarantine_is_not_lifted_before_the_cooldown(online):
    fail(online, 3)

    assert server_lift_quarantine(server_id=online.pk) is False


def test_after_the_cooldown_it_is_lifted_on_probation(online):
    fail(online, 3)
    Server.objects.filter(pk=online.pk).update(quarantined_at=timezone.now() - timedelta(minutes=2))

    assert server_lift_quarantine(server_id=online.pk) is True
    online.refresh_from_db()
    assert online.quarantined_at is None
    assert online.quarantine_reason == ""
    assert fail(online, 1) == [True]  # one more failure: back in quarantine


def test_the_server_json_says_why_and_since_when(online, client):
    fail(online, 3)
    online.refresh_from_db()

    body = client.get("/api/v1/servers/Laptop").json()

    assert body["consecutive_failures"] == 3
    quarantine = body["quarantine"]
    assert set(quarantine) == {"since", "reason", "probe_after"}
    assert quarantine["reason"] == online.quarantine_reason
    assert quarantine["since"].endswith("Z")
    server_lift_quarantine(server_id=online.pk, force=True)
    assert client.get("/api/v1/servers/Laptop").json()["quarantine"] is None


def test_reconcile_probes_a_quarantined_server_once_its_cooldown_passed(online, published):
    Server.objects.filter(pk=online.pk).update(last_checked_at=timezone.now())
    fail(online, 3)
    reconcile()
    assert ("servers_app.tasks.check_server", (online.pk,)) not in [
        (name, args) for name, args, _ in published
    ]
    Server.objects.filter(pk=online.pk).update(quarantined_at=timezone.now() - timedelta(minutes=2))

    reconcile()

    assert ("servers_app.tasks.check_server", (online.pk,)) in [
        (name, args) for name, args, _ in published
    ]


# --- with a simulator: the health check that brings it back, and what counts ------------

SDXL = "sdxl/juggernaut.safetensors"


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(flavour="forge-2", models=[SimModel(SDXL)], seconds_per_step=0)
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def simulated(sim, settings) -> Server:
    settings.MOBILESD_QUARANTINE_AFTER_FAILURES = 2
    settings.MOBILESD_QUARANTINE_COOLDOWN_SECONDS = 60
    settings.MOBILESD_RETRY_BACKOFF_SECONDS = 0
    settings.MOBILESD_MAX_RETRIES = 0  # each failure ends its job: one attempt each
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return checked_server(sim.url)


def run_queue(server_id: int) -> None:
    thread = run_queue_in_thread(server_id)
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_a_health_check_after_the_cooldown_brings_it_back(simulated, published):
    fail(simulated, 2)
    tasks.check_server(simulated.pk)
    assert Server.objects.get(pk=simulated.pk).quarantined_at is not None  # cooldown not over
    Server.objects.filter(pk=simulated.pk).update(
        quarantined_at=timezone.now() - timedelta(minutes=2)
    )

    tasks.check_server(simulated.pk)

    assert Server.objects.get(pk=simulated.pk).quarantined_at is None


@pytest.mark.django_db(transaction=True)
def test_server_side_failures_of_its_jobs_quarantine_it_and_the_rest_wait(simulated, sim):
    sim.faults.error_500_next = 2  # CUDA out of memory, twice
    jobs = [submit(), submit(), submit()]

    run_queue(simulated.pk)

    statuses = [Job.objects.get(pk=job.pk).status for job in jobs]
    assert statuses == [JobStatus.FAILED, JobStatus.FAILED, JobStatus.PENDING]
    server = Server.objects.get(pk=simulated.pk)
    assert server.quarantined_at is not None
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 2


@pytest.mark.django_db(transaction=True)
def test_a_jobs_own_failure_does_not_count(simulated, sim):
    Server.objects.update(models_stale=True)  # so that the engine, not the submit, refuses
    jobs = [submit(checkpoint_name="nowhere.safetensors") for _ in range(3)]

    run_queue(simulated.pk)

    assert {Job.objects.get(pk=job.pk).status for job in jobs} == {JobStatus.FAILED}
    server = Server.objects.get(pk=simulated.pk)
    assert server.consecutive_failures == 0
    assert server.quarantined_at is None


@pytest.mark.django_db(transaction=True)
def test_a_completed_job_resets_the_count(simulated, sim):
    sim.faults.error_500_next = 1
    jobs = [submit(), submit()]

    run_queue(simulated.pk)

    assert [Job.objects.get(pk=job.pk).status for job in jobs] == [
        JobStatus.FAILED,
        JobStatus.COMPLETED,
    ]
    assert Server.objects.get(pk=simulated.pk).consecutive_failures == 0
