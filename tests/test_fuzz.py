"""Schema-based fuzzing of the whole API (issue #12): Schemathesis generates requests for
every operation of the OpenAPI document /api/v1/schema, valid ones and invalid ones, sends
them through the WSGI application with a real API key, and checks each answer: never a
server error, a status the operation lists, a Content-Type it lists, a body that validates
against the schema listed for that status.

Bounded so the whole module takes about a minute on a small machine: a few dozen
derandomized examples per operation (the same cases on every run), no coverage phase.
Path parameters are half the time those of real objects (the server "Laptop", a completed
job with an image, a Civitai download), so the operations on existing objects are reached,
not only their 404s. Every example runs inside a savepoint that is rolled back, so each
starts from the same database; Celery messages are recorded (the autouse `published`
fixture) and no request can leave the machine (outgoing HTTP is refused at the transport),
so the operations that call a Forge server or Civitai answer their documented 502: the one
5xx allowed, and only after a refused call.
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest
import requests
import schemathesis
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import strategies as st
from model_bakery import baker
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from civitai_app.models import Download, DownloadStatus
from mobilesd.wsgi import application
from notifications_app.models import PushTarget
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server
from tests.openapi_check import schema_document
from tests.queue_app.test_api_images import add_image, png_bytes

MAX_EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Nothing listens there: a server row that somehow escaped the transport patch below
# would be refused by the kernel, not reach anything.
UNUSED_LOOPBACK_URL = "http://127.0.0.1:9"
JOB_ID = uuid.UUID("5f0c7a52-7d0e-4d1b-9a57-2b8f6c1e0a11")
DOWNLOAD_ID = uuid.UUID("8e2d4b6a-1c3f-4e5d-8a7b-9c0d1e2f3a4b")
# The path parameters of the real objects; the name of the stored image is known once the
# fixture has saved it.
KNOWN_PATH_PARAMETERS: dict[str, Any] = {
    "alias": "Laptop",
    "job_id": str(JOB_ID),
    "index": 0,
    "download_id": str(DOWNLOAD_ID),
}

# Values of query and body fields that name the real objects or pass the checks the
# document cannot express (a reachable-looking URL, an existing folder, a prompt), so that
# generated requests also get past validation; the models folder is known once the fixture
# has made it.
KNOWN_FIELD_VALUES: dict[str, Any] = {
    "server_alias": "Laptop",
    "target_server_alias": "Laptop",
    "target_server_aliases": ["Laptop"],
    "alias": "Desk",
    "api_url": UNUSED_LOOPBACK_URL,
    "generation_params": {"positive_prompt": "a lighthouse at dusk", "steps": 5},
    "model_version_id": 101,
}

config = SchemathesisConfig.from_dict(
    {
        "suppress-health-check": ["all"],
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "mode": "all",
            "database": "none",
        },
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        # 502 is the documented answer when a Forge server or Civitai cannot be reached, and
        # in this run none can; the test asserts that each 502 followed a refused call.
        "checks": {"not_a_server_error": {"expected-statuses": ["1xx", "2xx", "3xx", "4xx", 502]}},
    }
)
schema = schemathesis.openapi.from_dict(schema_document(), config=config)
schema.app = application


def _generated_or_known(values: Any, known: dict[str, Any]) -> st.SearchStrategy:
    """`values` with each field that has a known value replaced by it half the time."""
    if not isinstance(values, dict) or not values:
        return st.just(values)
    choices = {
        name: st.sampled_from([value, known[name]]) if name in known else st.just(value)
        for name, value in values.items()
    }
    return st.fixed_dictionaries(choices)


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict[str, Any] | None):
    return _generated_or_known(path_parameters, KNOWN_PATH_PARAMETERS)


@schema.hook
def flatmap_query(context, query: dict[str, Any] | None):
    return _generated_or_known(query, KNOWN_FIELD_VALUES)


@schema.hook
def flatmap_body(context, body: Any):
    return _generated_or_known(body, KNOWN_FIELD_VALUES)


class NetworkRefused(requests.exceptions.ConnectionError):
    """Outgoing HTTP during the fuzz run: refused before any socket is opened."""


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Every HTTP request the clients (Forge, Civitai) try fails as a refused connection."""
    attempted: list[str] = []

    def refuse(self, request, *args, **kwargs):
        attempted.append(request.url)
        raise NetworkRefused(f"no network in the fuzz run: {request.url}", request=request)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    return attempted


@pytest.fixture
def connection_kept() -> Iterator[None]:
    """The WSGI handler closes the database connection after each request, as a server must;
    inside the test's transaction it must stay open (as Django's test client keeps it)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(db, settings, tmp_path, raw_api_key: str, no_network, connection_kept) -> str:
    """The objects the real path parameters name; returns the API key to send."""
    settings.CIVITAI_BASE_URL = UNUSED_LOOPBACK_URL
    settings.CIVITAI_MAX_RETRIES = 0
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    KNOWN_FIELD_VALUES["models_dir"] = str(models_dir)
    server = baker.make(
        Server, alias="Laptop", api_url=UNUSED_LOOPBACK_URL, models_dir=str(models_dir)
    )
    job = baker.make(
        Job,
        id=JOB_ID,
        server=server,
        target_server_alias=server.alias,
        status=JobStatus.COMPLETED,
        generation_params={"positive_prompt": "a lighthouse at dusk", "steps": 5},
    )
    image: JobImage = add_image(job, png_bytes())
    KNOWN_PATH_PARAMETERS["name"] = PurePosixPath(str(image.file.name)).name
    baker.make(
        Download,
        id=DOWNLOAD_ID,
        status=DownloadStatus.FAILED,
        model_version_id=101,
        model_type="LORA",
        file_id=202,
        file_name="detail.safetensors",
        folder="Lora",
        download_url="https://civitai.com/api/download/models/101",
        sha256="0" * 64,
    )
    # A push target of the key's user ("owner", tests.support.new_key), on a LAN address
    # (allowed by default): its test send is refused at the transport like the other calls.
    KNOWN_PATH_PARAMETERS["target_id"] = str(
        baker.make(
            PushTarget,
            owner=get_user_model().objects.get(username="owner"),
            name="Fuzz phone",
            url="ntfy://10.255.255.1:9/fuzz",
            url_display="ntfy://10.255.255.1:9/fuzz",
        ).pk
    )
    return raw_api_key


# Schemathesis' per-operation tests do not survive pytest-xdist (`make test` runs two
# workers): a worker sees the 53 of them as one test and runs one. Under xdist, then, one
# test runs this module in a pytest process of its own (its own test database), while the
# workers go on with the rest.
UNDER_XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))


@pytest.mark.skipif(not UNDER_XDIST, reason="without xdist, the operations are tests here")
def test_every_operation_answers_as_documented_in_a_process_of_its_own() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfE",
            __file__,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    operations = len(list(schema.get_all_operations()))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert f"{operations} passed" in run.stdout, run.stdout[-3000:]


@pytest.mark.skipif(UNDER_XDIST, reason="run in a process of its own under xdist")
@schema.parametrize()
def test_every_operation_answers_as_documented(
    case, fuzz_world: str, no_network: list[str], worker_seen: None
) -> None:
    """No server error, and every answer is one the document describes (status, media type,
    body), for generated valid and invalid requests alike."""
    cache.clear()  # each case starts with fresh throttling and failed-attempt counters
    headers = {"Authorization": f"Bearer {fuzz_world}"}
    refused_before = len(no_network)
    with transaction.atomic():
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        transaction.set_rollback(True)
    if response.status_code == 502:
        assert len(no_network) > refused_before, "a 502 without a failed outgoing call"
