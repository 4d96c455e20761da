"""manage.py refresh_models_cache."""

import pytest
from django.core.management import CommandError, call_command
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from servers_app.models import CachedModel, Server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sim():
    simulator = ForgeSimulator(SimulatorConfig()).start()
    yield simulator
    simulator.stop()


def test_refresh_every_server_with_progress_and_summary(sim, capsys):
    baker.make(Server, alias="A", api_url=sim.url)
    baker.make(Server, alias="B", api_url=sim.url)

    call_command("refresh_models_cache")

    out = capsys.readouterr().out
    assert "[1/2] A" in out
    assert "[2/2] B" in out
    assert "4 checkpoints, 3 LoRAs" in out
    assert "Refreshed 2 of 2 server(s)." in out
    assert CachedModel.objects.filter(kind__in=["checkpoint", "lora"]).count() == 14


def test_refresh_one_server(sim, capsys):
    baker.make(Server, alias="A", api_url=sim.url)
    baker.make(Server, alias="B", api_url=sim.url)

    call_command("refresh_models_cache", "--server", "B")

    assert set(CachedModel.objects.values_list("server__alias", flat=True)) == {"B"}


def test_unreachable_server_fails_the_command_and_keeps_the_list(sim, capsys):
    server = baker.make(Server, alias="A", api_url=sim.url)
    call_command("refresh_models_cache")
    sim.faults.refuse_connections = True

    with pytest.raises(CommandError, match="1 could not be reached"):
        call_command("refresh_models_cache")

    assert "kept the last list (stale)" in capsys.readouterr().out
    assert CachedModel.objects.filter(server=server, kind__in=["checkpoint", "lora"]).count() == 7


def test_unknown_server_alias(db):
    with pytest.raises(CommandError, match="not found"):
        call_command("refresh_models_cache", "--server", "Nope")
