"""A server password outside Latin-1 works end to end (UTF-8 Basic auth, RFC 7617) and
never reaches a log: a health check and a job run on a real (in-process) simulator, every
log record of every level captured and searched."""

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from model_bakery import baker

from integrations.forge.simulator import ForgeSimulator, SimModel, SimulatorConfig
from integrations.forge.simulator.api import Request
from queue_app.engine import server_run
from queue_app.models import JobStatus
from servers_app.models import Server
from servers_app.services import server_check_health
from tests.support import submit

pytestmark = pytest.mark.django_db(transaction=True)

USERNAME, PASSWORD = "jürgen", "pass€"
SECRETS = [
    PASSWORD,
    base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(),
    base64.b64encode(PASSWORD.encode()).decode(),
    PASSWORD.encode("unicode_escape").decode(),  # pass\u20ac, as a repr would write it
]


def _start(**config: Any) -> ForgeSimulator:
    return ForgeSimulator(
        SimulatorConfig(models=[SimModel("sd/base.safetensors")], seconds_per_step=0, **config)
    ).start()


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    simulator = _start()
    yield simulator
    simulator.stop()


@pytest.fixture
def authorizations(sim: ForgeSimulator, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Authorization header of every request the simulator received."""
    seen: list[str] = []
    handle = sim.api.handle

    def recording(request: Request) -> Any:
        seen.append(request.headers.get("authorization", ""))
        return handle(request)

    monkeypatch.setattr(sim.api, "handle", recording)
    return seen


def _assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records
    logged = "\n".join(
        [caplog.text] + [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    )
    for secret in SECRETS:
        assert secret not in logged


def test_a_health_check_and_a_job_with_a_non_latin1_password_work_and_log_no_secret(
    sim, authorizations, settings, caplog
):
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.05
    caplog.set_level(logging.DEBUG)
    server = baker.make(
        Server, alias="Laptop", api_url=sim.url, username=USERNAME, password=PASSWORD
    )

    server_check_health(server=server)
    server.refresh_from_db()
    assert server.is_online is True, server.last_error
    job = submit(checkpoint_name="sd/base.safetensors")
    assert server_run(server.pk) == 1

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.result_details
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert authorizations
    assert set(authorizations) == {expected}
    _assert_no_secret_logged(caplog)


def test_a_server_that_decodes_basic_auth_as_ascii_refuses_it_cleanly(caplog):
    """FastAPI's HTTPBasic (A1111/Forge `--api-auth`) decodes as ASCII: the answer is a 401,
    recorded as the server's error, not a crash, and still nothing secret is logged."""
    caplog.set_level(logging.DEBUG)
    simulator = _start(auth_users={USERNAME: PASSWORD})
    try:
        server = baker.make(
            Server, alias="Laptop", api_url=simulator.url, username=USERNAME, password=PASSWORD
        )
        result = server_check_health(server=server)
    finally:
        simulator.stop()

    server.refresh_from_db()
    assert result.online is False
    assert "Invalid authentication credentials" in server.last_error
    _assert_no_secret_logged(caplog)
