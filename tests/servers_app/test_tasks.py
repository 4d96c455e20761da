"""The model cache's Celery tasks, called as functions, and their beat schedule."""

import pytest
from django.conf import settings
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from servers_app import tasks
from servers_app.models import CachedModel, Server


def test_beat_refreshes_the_models_periodically():
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-models"]

    assert entry["task"] == "servers_app.tasks.refresh_all_models"
    assert entry["schedule"] == settings.MOBILESD_MODELS_REFRESH_SECONDS


def test_refresh_all_models_queues_one_task_per_enabled_server(db, published):
    one = baker.make(Server, alias="A", api_url="http://a:1")
    two = baker.make(Server, alias="B", api_url="http://b:1")
    baker.make(Server, alias="Off", api_url="http://c:1", enabled=False)

    tasks.refresh_all_models()

    assert sorted(args for name, args, _ in published) == sorted([(one.pk,), (two.pk,)])
    assert {name for name, _, _ in published} == {"servers_app.tasks.refresh_server_models"}


@pytest.mark.django_db(transaction=True)
def test_refresh_server_models_fills_the_cache():
    with ForgeSimulator(SimulatorConfig()) as sim:
        server = baker.make(Server, alias="Sim", api_url=sim.url)

        tasks.refresh_server_models(server.pk)

    assert CachedModel.objects.filter(server=server, kind="checkpoint").count() == 4


def test_refresh_of_a_deleted_server_does_nothing(db):
    tasks.refresh_server_models(12345)  # must not raise


def test_check_server_of_a_deleted_server_does_nothing(db, published):
    tasks.check_server(12345)  # must not raise

    assert published == []


@pytest.mark.django_db(transaction=True)
def test_a_server_deleted_during_its_health_check_ends_the_check_quietly(
    monkeypatch, published, caplog
):
    """The check of a server seen for the first time reads its models; the server is
    deleted after they were fetched and before they are cached."""
    from integrations.forge.client import ForgeClient
    from servers_app.services import server_delete

    real_loras = ForgeClient.loras

    def loras_then_delete(client: ForgeClient) -> list:
        listing = real_loras(client)
        server_delete(server=Server.objects.get(alias="Sim"))
        return listing

    monkeypatch.setattr(ForgeClient, "loras", loras_then_delete)
    caplog.set_level("INFO", logger="servers_app.services")
    with ForgeSimulator(SimulatorConfig()) as sim:
        server = baker.make(Server, alias="Sim", api_url=sim.url)

        tasks.check_server(server.pk)  # must not raise

    assert not Server.objects.filter(pk=server.pk).exists()
    assert not CachedModel.objects.exists()
    assert published == []  # nobody is told a deleted server is available
    deleted = [r for r in caplog.records if "deleted during its health check" in r.getMessage()]
    assert [r.levelname for r in deleted] == ["INFO"]
