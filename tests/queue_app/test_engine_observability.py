"""What the engine tells operators while it runs jobs on a real (in-process) simulator:
the job id and server in its log records, dispatch gaps and checkpoint switches."""

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from core_app.logs import ContextFilter
from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from queue_app import engine
from queue_app.engine import server_run
from servers_app.models import Server
from tests.metrics_support import scrape
from tests.support import checked_server, submit

pytestmark = pytest.mark.django_db(transaction=True)

PONY = "Pony/cyberrealisticPony_v8.safetensors"
JUGGERNAUT = "sdxl/juggernaut.safetensors"


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(
        SimulatorConfig(
            flavour="forge-2",
            path_separator="\\",
            models=[SimModel(PONY), SimModel(JUGGERNAUT)],
            seconds_per_step=0,
        )
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def server(sim, settings) -> Server:
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    return checked_server(sim.url)


def test_records_logged_while_a_job_runs_and_is_stored_carry_its_id_and_server(
    server, monkeypatch, caplog
):
    log = logging.getLogger("queue_app.engine")
    generate, store = engine.job_generate, engine._store_results

    def generating(claim: Any, **kwargs: Any) -> Any:
        log.info("generating %s", claim.job_id)
        return generate(claim, **kwargs)

    def storing(claim: Any, generated: Any) -> None:
        log.info("storing %s", claim.job_id)
        store(claim, generated)

    monkeypatch.setattr(engine, "job_generate", generating)
    monkeypatch.setattr(engine, "_store_results", storing)
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="queue_app.engine")
    jobs = [submit(seed=i) for i in range(3)]

    assert server_run(server.pk) == 3

    mine = [r for r in caplog.records if r.msg in ("generating %s", "storing %s")]
    assert len(mine) == 6
    for record in mine:
        assert record.job_id == str(record.args[0])
        assert record.server == "Laptop"
    assert {r.job_id for r in mine} == {str(job.pk) for job in jobs}


def _scraped(settings) -> dict:
    settings.MOBILESD_METRICS_TOKEN = "t"
    samples = scrape(Client(HTTP_AUTHORIZATION="Bearer t"))
    laptop = frozenset({("server", "Laptop")})
    return {
        name: samples.get((name, laptop), 0.0)
        for name in (
            "mobilesd_dispatch_gap_seconds_count",
            "mobilesd_checkpoint_switches_total",
            "mobilesd_checkpoint_switch_seconds_count",
        )
    }


def _delta(before: dict, after: dict, name: str) -> float:
    return after[name] - before[name]


def test_the_engine_counts_a_dispatch_gap_before_each_request_after_the_first(server, settings):
    before = _scraped(settings)
    for seed in range(3):
        submit(seed=seed)

    assert server_run(server.pk) == 3

    # The first request follows no answer of this loop: two gaps for three jobs.
    assert _delta(before, _scraped(settings), "mobilesd_dispatch_gap_seconds_count") == 2


def test_the_engine_counts_each_checkpoint_switch(server, settings):
    loaded_is_pony = "cyberrealisticPony" in server.loaded_checkpoint
    other, loaded = (JUGGERNAUT, PONY) if loaded_is_pony else (PONY, JUGGERNAUT)
    before = _scraped(settings)

    # One at a time (the scheduler would otherwise run the loaded checkpoint's jobs first):
    # a switch to the other checkpoint, one back, then none.
    for checkpoint in (other, loaded, loaded):
        submit(checkpoint_name=checkpoint)
        assert server_run(server.pk) == 1

    after = _scraped(settings)
    assert _delta(before, after, "mobilesd_checkpoint_switches_total") == 2
    assert _delta(before, after, "mobilesd_checkpoint_switch_seconds_count") == 2
