"""The OpenAPI document describes what the API really answers (issue #11, point 8): the
statuses each operation can give, nulls, the envelopes, generation_params and
result_details, and binary bodies in the forms generators read."""

import pytest

from tests.openapi_check import schema_document


def _operation(path: str, method: str) -> dict:
    return schema_document()["paths"][path][method]


def _component(name: str) -> dict:
    return schema_document()["components"]["schemas"][name]


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/api/v1/servers", "get", {"200", "401", "429", "500"}),
        ("/api/v1/servers", "post", {"201", "400", "401", "403", "413", "415", "429"}),
        ("/api/v1/servers/{alias}", "get", {"200", "401", "404", "429"}),
        ("/api/v1/servers/{alias}", "patch", {"200", "400", "401", "404", "413", "415"}),
        ("/api/v1/servers/{alias}", "put", {"200", "400", "401", "404", "413", "415"}),
        ("/api/v1/servers/{alias}", "delete", {"200", "401", "404", "409"}),
        ("/api/v1/generate", "post", {"202", "400", "401", "404", "409", "413", "415", "429"}),
        ("/api/v1/queue/jobs", "get", {"200", "400", "401", "429"}),
        ("/outputs/{name}", "get", {"200", "304", "401", "404", "429"}),
    ],
)
def test_operations_list_the_statuses_they_answer(path, method, statuses):
    assert statuses <= set(_operation(path, method)["responses"])


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/servers/{alias}", "delete"),
        ("/api/v1/servers/{alias}/refresh-models", "post"),
        ("/api/v1/debug/models-cache", "get"),
        ("/api/v1/debug/verify-checkpoint", "get"),
    ],
)
def test_operations_that_need_the_admin_scope_list_its_403(path, method):
    response = _operation(path, method)["responses"]["403"]

    assert "admin_scope_required" in response["description"]


@pytest.mark.parametrize(
    ("path", "method"), [("/api/v1/servers", "get"), ("/api/v1/checkpoints", "get")]
)
def test_reads_every_key_may_make_list_no_403(path, method):
    assert "403" not in _operation(path, method)["responses"]


def test_error_statuses_answer_the_error_shape():
    for operations in schema_document()["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and status != "503":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, status


def test_server_timestamps_that_start_empty_are_nullable():
    server = _component("Server")["properties"]

    assert server["last_checked_at"]["type"] == ["string", "null"]
    assert server["last_seen_at"]["type"] == ["string", "null"]


def test_put_and_patch_answer_the_message_and_server_envelope():
    for method in ("put", "patch"):
        ok = _operation("/api/v1/servers/{alias}", method)["responses"]["200"]
        ref = ok["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ServerEnvelope"
    assert set(_component("ServerEnvelope")["required"]) == {"message", "server"}


def test_generation_params_are_described_key_by_key_and_keep_extra_keys():
    params = _component("GenerationParams")

    assert params["additionalProperties"] is True
    props = params["properties"]
    assert props["steps"] == {"type": "integer", "maximum": 150, "minimum": 1}
    assert (props["width"]["minimum"], props["width"]["maximum"]) == (64, 4096)
    assert props["cfg_scale"]["type"] == "number"
    assert props["restore_faces"]["type"] == "boolean"
    assert {"positive_prompt", "checkpoint_name", "num_images", "enable_hires_fix"} <= set(props)
    assert {"scheduler_or_quality_preset", "seed", "subseed", "loras"} <= set(props)


def test_result_details_describe_what_jobs_write():
    details = _component("ResultDetails")

    assert details["additionalProperties"] is True
    assert {
        "images",
        "info",
        "generation_info",
        "checkpoint",
        "requested_checkpoint",
        "error",
        "code",
        "progress_percentage",
        "cancelled",
        "last_error",
    } <= set(details["properties"])
    job = _component("Job")["properties"]["result_details"]
    assert job["oneOf"] == [{"$ref": "#/components/schemas/ResultDetails"}, {"type": "null"}]


def test_images_and_the_raw_upload_are_binary_under_their_media_types():
    binary = {"schema": {"type": "string", "format": "binary"}}
    image = _operation("/outputs/{name}", "get")["responses"]["200"]["content"]
    upload = _operation("/api/v1/civitai/image-info", "post")["requestBody"]["content"]

    # application/octet-stream is the one binary type API client generators read.
    binary_types = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")
    assert image == {media: binary for media in binary_types}
    assert {media: upload[media] for media in binary_types} == {
        media: binary for media in binary_types
    }
    assert "multipart/form-data" in upload


def test_anonymous_mode_makes_the_key_optional_in_the_document(settings):
    from core_app.schema import anonymous_security

    def document() -> dict:
        return {"paths": {"/x": {"get": {"security": [{"ApiKeyBearer": []}]}}}}

    settings.MOBILESD_ALLOW_ANONYMOUS = False
    assert anonymous_security(document())["paths"]["/x"]["get"]["security"] == [
        {"ApiKeyBearer": []}
    ]
    settings.MOBILESD_ALLOW_ANONYMOUS = True
    assert anonymous_security(document())["paths"]["/x"]["get"]["security"] == [
        {"ApiKeyBearer": []},
        {},
    ]
