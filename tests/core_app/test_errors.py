"""The one error shape for every failure, including those before any view runs."""

import json
from unittest import mock

import pytest
from django.db import OperationalError, ProgrammingError, connection

from core_app.exceptions import bad_request, server_error
from core_app.models import ApiKey
from queue_app.models import Job
from tests.support import assert_error, db_snapshot


def test_malformed_json_is_400(client, server):
    response = client.generic(
        "POST", "/api/v1/generate", '{"target_server_alias": "Laptop",', "application/json"
    )

    error = assert_error(response, 400, "malformed_request")
    assert "Malformed JSON" in error["message"]
    assert not Job.objects.exists()


def test_invalid_utf8_is_400(client, server):
    response = client.generic("POST", "/api/v1/generate", b"\xff\xfe{}", "application/json")

    assert_error(response, 400, "malformed_request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(client, server, content_type):
    response = client.generic(
        "POST", "/api/v1/generate", "target_server_alias=Laptop", content_type
    )

    error = assert_error(response, 415, "unsupported_media_type")
    assert content_type in error["message"]


def test_oversized_body_is_413_and_stores_nothing(client, server, settings):
    before = db_snapshot()
    body = '{"target_server_alias": "Laptop", "generation_params": {"positive_prompt": "%s"}}' % (
        "x" * (settings.MOBILESD_MAX_BODY_BYTES + 10)
    )

    response = client.generic("POST", "/api/v1/generate", body, "application/json")

    assert_error(response, 413, "payload_too_large")
    assert db_snapshot() == before


def test_wrong_method_is_405(client, db):
    assert_error(client.get("/api/v1/generate"), 405, "method_not_allowed")


def test_unknown_api_url_is_404_in_the_error_shape(client, db):
    assert_error(client.get("/api/v1/no-such-thing"), 404, "not_found")


def test_an_image_name_no_route_takes_is_404_in_the_error_shape(client, db):
    """Found by the fuzz run (tests/test_fuzz.py): a name with a newline matches no route,
    and /outputs/ got Django's HTML page instead of the API's answer."""
    assert_error(client.get("/outputs/5f0c7a52%0A.png"), 404, "not_found")


@pytest.mark.parametrize(
    ("handler", "status"), [(bad_request, 400), (server_error, 500)], ids=["400", "500"]
)
def test_errors_before_any_view_are_in_the_error_shape_under_outputs_too(rf, handler, status):
    request = rf.get("/outputs/a.png")
    response = handler(request) if handler is server_error else handler(request, Exception())

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(json.loads(response.content)) == {"message", "error", "code"}


def test_unexpected_exception_is_a_500_in_the_error_shape(client, server):
    with mock.patch("queue_app.views.job_get", side_effect=RuntimeError("boom")):
        response = client.get("/api/v1/queue/jobs/88615c9d-71ec-4803-88b0-14f5162f6c66/status")

    error = assert_error(response, 500, "server_error")
    assert "boom" not in error["message"]


def _database_down_at(table: str):
    """An execute wrapper (connection.execute_wrapper) failing, as a database that went away
    does, every statement that touches `table`; the others run."""

    def fail(execute, sql, params, many, context):
        if f'"{table}"' in sql:
            raise OperationalError("connection to server at 127.0.0.1 failed: server closed")
        return execute(sql, params, many, context)

    return fail


def test_a_submit_while_the_database_is_down_is_a_503_and_stores_nothing(client, server):
    before = db_snapshot()
    body = {"target_server_alias": "Laptop", "generation_params": {"positive_prompt": "a"}}

    with connection.execute_wrapper(_database_down_at(Job._meta.db_table)):
        response = client.post("/api/v1/generate", body, format="json")

    error = assert_error(response, 503, "database_unavailable")
    assert response["Retry-After"] == "5"
    assert "nothing was changed" in error["message"]
    assert "127.0.0.1" not in error["message"]  # the driver's words stay in the log
    assert db_snapshot() == before
    # Once the database is back, the same request goes through.
    assert client.post("/api/v1/generate", body, format="json").status_code == 202


def test_a_read_whose_key_cannot_be_looked_up_is_a_503_not_a_401(client, job):
    with connection.execute_wrapper(_database_down_at(ApiKey._meta.db_table)):
        response = client.get(f"/api/v1/queue/jobs/{job.pk}/status")

    assert_error(response, 503, "database_unavailable")


def test_a_statements_own_mistake_is_still_a_500(client, job):
    def broken(execute, sql, params, many, context):
        raise ProgrammingError('column "nope" does not exist')

    with connection.execute_wrapper(broken):
        response = client.get(f"/api/v1/queue/jobs/{job.pk}/status")

    assert_error(response, 500, "server_error")


def test_validation_errors_are_flattened_to_dotted_paths(client, server):
    response = client.post(
        "/api/v1/generate",
        {"target_server_alias": "Laptop", "generation_params": {"loras": [{"name": 5}]}},
        format="json",
    )

    error = assert_error(response, 400, "validation_error")
    assert error["fields"] == {"generation_params.loras.0.name": ["Must be a string."]}


UNKNOWN_JOB = "/api/v1/queue/jobs/88615c9d-71ec-4803-88b0-14f5162f6c66/status"


@pytest.mark.parametrize(
    ("send", "status"),
    [
        pytest.param(
            lambda c, a: c.post("/api/v1/generate", {"target_server_alias": ""}, format="json"),
            400,
            id="validation",
        ),
        pytest.param(lambda c, a: c.get(UNKNOWN_JOB), 404, id="unknown job"),
        pytest.param(lambda c, a: a.get("/api/v1/queue/jobs"), 401, id="no key"),
        pytest.param(
            lambda c, a: c.generic("POST", "/api/v1/generate", "{", "application/json"),
            400,
            id="malformed json",
        ),
        pytest.param(lambda c, a: c.get("/api/v1/no-such-thing"), 404, id="unknown route"),
        pytest.param(
            lambda c, a: c.generic("POST", "/api/v1/generate", "x" * 5_000, "application/json"),
            413,
            id="too large",
        ),
        pytest.param(lambda c, a: c.get("/api/v1/generate"), 405, id="wrong method"),
    ],
)
def test_every_error_body_carries_error_as_the_original_did(
    client, anon_client, server, settings, send, status
):
    settings.MOBILESD_MAX_BODY_BYTES = 1_000
    response = send(client, anon_client)

    assert response.status_code == status
    body = response.json()
    assert body["error"] == body["message"]
    assert body["message"]


def test_the_500_view_carries_error_too(rf):
    response = server_error(rf.get("/api/v1/queue/jobs"))

    assert response.status_code == 500
    assert json.loads(response.content) == {
        "message": "Internal server error.",
        "error": "Internal server error.",
        "code": "server_error",
    }


def test_the_schema_documents_error_beside_message(client):
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()

    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["type"] == "string"
    assert {"message", "error", "code"} <= set(error["required"])
