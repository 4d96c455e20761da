"""JSON bodies PostgreSQL or Python could not take are a 400 at parse, never a 500."""

import json

import pytest

from queue_app.models import Job
from tests.support import assert_error


def post_raw(client, body: str):
    return client.post("/api/v1/generate", body, content_type="application/json")


def generate_body(params: dict) -> str:
    return json.dumps(
        {"target_server_alias": "any", "generation_params": {"prompt": "a cat", **params}}
    )


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"prompt": "a\u0000cat"}, "generation_params.prompt"),
        ({"unknown_option": "x\u0000"}, "generation_params.unknown_option"),
        ({"unknown\u0000key": 1}, "generation_params"),
        ({"nested": {"deeper": ["ok", "no\u0000"]}}, "generation_params.nested.deeper.1"),
    ],
    ids=["value", "unknown-key-value", "key", "nested"],
)
def test_a_nul_anywhere_in_a_json_string_is_a_400_at_its_path(client, server, params, path):
    body = generate_body(params)
    assert "\\u0000" in body

    response = post_raw(client, body)

    error = assert_error(response, 400, "validation_error")
    assert list(error["fields"]) == [path]
    assert "NUL" in error["fields"][path][0]
    assert not Job.objects.exists()


def test_json_nested_20000_deep_is_a_400_not_a_recursion_error(client):
    depth = 20_000
    body = '{"target_server_alias": "any", "generation_params": ' + "[" * depth + "]" * depth + "}"

    response = post_raw(client, body)

    error = assert_error(response, 400, "malformed_request")
    assert "nested deeper" in error["message"]


def test_json_nested_just_past_the_limit_is_a_400(client):
    nested: dict = {}
    for _ in range(70):
        nested = {"a": nested}

    response = post_raw(client, generate_body({"extra": nested}))

    error = assert_error(response, 400, "malformed_request")
    assert "nested deeper than 64" in error["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(client, constant):
    body = '{"target_server_alias": "any", "generation_params": {"prompt": "a", "x": %s}}'

    response = post_raw(client, body % constant)

    assert_error(response, 400, "malformed_request")
