"""The registry of error codes (core_app.error_codes) lists every code the source can send,
and the OpenAPI document's enums are built from it."""

import re
from pathlib import Path

import pytest
from rest_framework import exceptions

from core_app.error_codes import DOWNLOAD_FAILURE_CODES, ERROR_CODES, JOB_FAILURE_CODES
from core_app.errors import SPECIFIC_VALIDATION_CODES
from core_app.exceptions import api_exception_handler
from tests.openapi_check import schema_document

ROOT = Path(__file__).resolve().parents[2]
# integrations/forge is left out: its codes name a Forge client error inside MobileSD and
# are never sent (a job's or refresh's failure carries the error's text, not its code).
SCANNED = ["core_app", "servers_app", "queue_app", "civitai_app", "debug_app", "dashboard_app"]
SCANNED += ["integrations/civitai"]
CODE = re.compile(r"\b(?:default_)?code\s*=\s*\"([a-z0-9_]+)\"")
DOWNLOAD_CODE = re.compile(r"(?:\berror_code\s*=\s*|DownloadFailed\(\s*)\"([a-z0-9_]+)\"")


def _sources() -> list[Path]:
    files = [path for folder in SCANNED for path in (ROOT / folder).rglob("*.py")]
    return [
        path for path in files if "migrations" not in path.parts and "simulator" not in path.parts
    ]


def _found(pattern: re.Pattern[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in _sources():
        text = path.read_text()
        for match in pattern.finditer(text):
            statement = text[text.rfind("raise ", 0, match.start()) : match.start()]
            if "ValidationError(" in statement:
                continue  # a field validator's code: the answer's code is validation_error
            found.setdefault(match.group(1), str(path.relative_to(ROOT)))
    return found


def test_every_code_in_the_source_is_registered():
    sent = {**ERROR_CODES, **JOB_FAILURE_CODES, **DOWNLOAD_FAILURE_CODES}
    found = _found(CODE)

    # The scan sees codes of every kind (it would pass vacuously if the pattern broke).
    assert {
        "server_not_found",
        "invalid_api_key",
        "checkpoint_mismatch",
        "civitai_archived",
    } <= set(found)
    missing = {code: where for code, where in found.items() if code not in sent}
    assert not missing, f"Add these codes to core_app/error_codes.py: {missing}"


def test_validation_codes_sent_as_the_code_are_registered():
    # Field validators' codes are not read from the source; these become the body's `code`.
    assert ERROR_CODES.keys() >= SPECIFIC_VALIDATION_CODES


def test_every_download_failure_code_in_the_source_is_registered():
    found = _found(DOWNLOAD_CODE)

    assert {"worker_lost", "hash_mismatch"} <= set(found)
    missing = {code: where for code, where in found.items() if code not in DOWNLOAD_FAILURE_CODES}
    assert not missing, f"Add these to DOWNLOAD_FAILURE_CODES: {missing}"


def _drf_exceptions() -> list[type[exceptions.APIException]]:
    found, todo = [], [exceptions.APIException]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    # APIException itself is only the base: nothing raises it bare.
    return [c for c in found[1:] if c.__module__ == "rest_framework.exceptions"]


ARGUMENTS = {
    exceptions.MethodNotAllowed: ("PUT",),
    exceptions.UnsupportedMediaType: ("text/plain",),
}


@pytest.mark.parametrize("exception", _drf_exceptions(), ids=lambda cls: cls.__name__)
def test_drf_exceptions_answer_a_registered_code(exception):
    response = api_exception_handler(exception(*ARGUMENTS.get(exception, ())), {"view": None})

    assert response.data["code"] in ERROR_CODES


def test_the_document_enumerates_the_registered_codes():
    schemas = schema_document()["components"]["schemas"]

    assert schemas["ErrorCodeEnum"]["enum"] == list(ERROR_CODES)
    code = schemas["ResultDetails"]["properties"]["code"]
    assert schemas[code["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"] == list(JOB_FAILURE_CODES)
