"""What the queue does when servers_app announces something (servers_app/signals.py)."""

import pytest
from model_bakery import baker

from core_app.errors import Conflict
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from queue_app.models import Job, JobStatus
from servers_app import tasks as server_tasks
from servers_app.models import Server
from servers_app.services import server_delete


def names(published) -> list[tuple[str, tuple]]:
    return [(name, args) for name, args, _ in published]


@pytest.mark.django_db(transaction=True)
def test_a_server_found_online_by_its_check_runs_its_queue(published):
    sim = ForgeSimulator(SimulatorConfig()).start()
    try:
        server = baker.make(Server, alias="Sim", api_url=sim.url, is_online=False)
        baker.make(Job, server=server, generation_params={"a": 1})

        server_tasks.check_server(server.pk)

        server.refresh_from_db()
        assert server.is_online is True
        assert names(published) == [("queue_app.tasks.run_server", (server.pk,))]
    finally:
        sim.stop()


@pytest.mark.django_db(transaction=True)
def test_a_server_found_online_with_nothing_to_do_runs_nothing(published):
    sim = ForgeSimulator(SimulatorConfig()).start()
    try:
        server = baker.make(Server, alias="Sim", api_url=sim.url, is_online=False)

        server_tasks.check_server(server.pk)

        server.refresh_from_db()
        assert server.is_online is True
        assert names(published) == []
    finally:
        sim.stop()


def test_a_server_that_does_not_answer_runs_nothing(db, published):
    server = baker.make(Server, alias="Gone", api_url="http://127.0.0.1:9", is_online=True)
    baker.make(Job, server=server, generation_params={"a": 1})

    server_tasks.check_server(server.pk)

    server.refresh_from_db()
    assert server.is_online is False
    assert names(published) == []


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.PROCESSING])
def test_a_server_with_unfinished_jobs_is_not_deleted(db, status):
    server = baker.make(Server, alias="Busy", api_url="http://127.0.0.1:9")
    baker.make(Job, server=server, status=status, generation_params={})

    with pytest.raises(Conflict) as refused:
        server_delete(server=server)

    assert refused.value.code == "server_has_active_jobs"
    assert Server.objects.filter(pk=server.pk).exists()


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_server_whose_jobs_all_finished_is_deleted(db, status):
    server = baker.make(Server, alias="Idle", api_url="http://127.0.0.1:9")
    baker.make(Job, server=server, status=status, generation_params={})

    server_delete(server=server)

    assert not Server.objects.filter(pk=server.pk).exists()
