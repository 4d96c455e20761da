"""The one error design of the Forge and Civitai clients (`integrations.errors`)."""

import pickle
import re
from typing import Any

import pytest
import requests
import responses

from integrations.civitai import client as civitai
from integrations.errors import IntegrationError
from integrations.forge import client as forge
from integrations.http import retry_after_seconds

BASE = "http://forge.local:7860"


def _all_subclasses(cls: type[IntegrationError]) -> list[type[IntegrationError]]:
    found: list[type[IntegrationError]] = []
    sub: type[IntegrationError]
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


# Importing both clients above registers every error class they define.
ERROR_CLASSES = [
    cls for cls in _all_subclasses(IntegrationError) if cls.__module__.startswith("integrations.")
]


def test_both_clients_errors_derive_from_the_one_base():
    assert issubclass(forge.ForgeError, IntegrationError)
    assert issubclass(civitai.CivitaiError, IntegrationError)
    assert len(ERROR_CLASSES) >= 15


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_has_its_own_stable_code_and_a_transient_flag(cls):
    assert re.fullmatch(r"(forge|civitai)_[a-z_]+", cls.code)
    assert isinstance(cls.transient, bool)


def test_no_two_error_classes_share_a_code():
    codes = [cls.code for cls in ERROR_CLASSES]

    assert len(codes) == len(set(codes))


def test_transient_is_what_trying_later_may_fix():
    transient = {cls.__name__ for cls in ERROR_CLASSES if cls.transient}

    assert transient == {
        "ForgeTransientError",
        "ForgeUnreachableError",
        "ForgeTimeoutError",
        "CivitaiUnavailable",
        "CivitaiInterrupted",
        "CivitaiRateLimited",
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_survives_pickling_with_all_its_attributes(cls):
    extra: dict[str, Any] = {}
    if issubclass(cls, forge.ForgeError):
        extra = {"body": {"detail": "x"}, "method": "POST", "path": "/sdapi/v1/txt2img"}
    error = cls("it failed", status_code=503, retry_after=2.5, **extra)

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is cls
    assert vars(copy) == vars(error)
    assert (copy.message, copy.status_code, copy.retry_after) == ("it failed", 503, 2.5)
    assert str(copy) == str(error)


def test_a_forge_errors_detail_is_its_message():
    error = forge.ForgePermanentError("Sampler not found", status_code=404, path="/p")

    assert error.detail == error.message == "Sampler not found"
    assert str(error) == "/p, HTTP 404: Sampler not found"


# --- classification of HTTP statuses ---------------------------------------------------------

FORGE_STATUSES = [
    (302, {}, forge.ForgePermanentError),
    (400, {"detail": "bad"}, forge.ForgePermanentError),
    (401, {"detail": "Not authenticated"}, forge.ForgeAuthError),
    (403, {"detail": "Forbidden"}, forge.ForgeAuthError),
    (404, {"detail": "Not Found"}, forge.ForgePermanentError),
    (408, {"detail": "timeout"}, forge.ForgeTransientError),
    (422, {"detail": [{"loc": ["body", "steps"], "msg": "bad"}]}, forge.ForgePermanentError),
    (425, {"detail": "early"}, forge.ForgeTransientError),
    (429, {"detail": "slow down"}, forge.ForgeTransientError),
    (500, {"error": "OutOfMemoryError", "errors": "CUDA out of memory"}, forge.ForgeTransientError),
    (500, {"error": "KeyError", "errors": "'x'"}, forge.ForgePermanentError),
    (500, {"error": "RuntimeError", "errors": "model 'x' not found"}, forge.ForgePermanentError),
    (501, {"detail": "no"}, forge.ForgePermanentError),
    (502, {"detail": "bad gateway"}, forge.ForgeTransientError),
    (503, {"detail": "unavailable"}, forge.ForgeTransientError),
    (504, {"detail": "gateway timeout"}, forge.ForgeTransientError),
]


@pytest.mark.parametrize(("status", "body", "expected"), FORGE_STATUSES)
def test_forge_http_statuses_are_classified(status, body, expected):
    with responses.RequestsMock() as mocked:
        mocked.get(f"{BASE}/sdapi/v1/sd-models", json=body, status=status)
        with pytest.raises(forge.ForgeError) as caught:
            forge.ForgeClient(forge.ServerEndpoint(BASE)).sd_models()

    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.transient is expected.transient


def _civitai_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    with responses.RequestsMock() as mocked:
        mocked.get("https://civitai.test/x", json=body, status=status, headers=headers or {})
        response = requests.get("https://civitai.test/x", timeout=5)
    return civitai.error_for(response, what="model version 1", has_key=False)


CIVITAI_STATUSES = [
    (400, {"error": "Invalid id"}, civitai.CivitaiBadRequest, 400),
    (401, {"error": "Unauthorized"}, civitai.CivitaiLoginRequired, 403),
    (403, {"error": "Forbidden"}, civitai.CivitaiForbidden, 403),
    (403, {"error": "Early Access", "deadline": "2030-01-01"}, civitai.CivitaiEarlyAccess, 403),
    (404, {"error": "Model not found"}, civitai.CivitaiNotFound, 404),
    (410, {"error": "Model archived"}, civitai.CivitaiArchived, 410),
    (418, {"error": "teapot"}, civitai.CivitaiBadRequest, 400),
    (429, {"error": "too many"}, civitai.CivitaiRateLimited, 429),
    (500, {"error": "boom"}, civitai.CivitaiUnavailable, 502),
    (503, {"error": "down"}, civitai.CivitaiUnavailable, 502),
]


@pytest.mark.parametrize(("status", "body", "expected", "api_status"), CIVITAI_STATUSES)
def test_civitai_http_statuses_are_classified(status, body, expected, api_status):
    error = _civitai_answer(status, body)

    assert type(error) is expected
    assert error.status_code == status
    assert error.http_status == api_status


@pytest.mark.parametrize("status", [429, 503])
def test_both_clients_keep_the_retry_after_they_were_given(status):
    with responses.RequestsMock() as mocked:
        mocked.get(f"{BASE}/sdapi/v1/options", json={}, status=status, headers={"Retry-After": "7"})
        with pytest.raises(forge.ForgeTransientError) as caught:
            forge.ForgeClient(forge.ServerEndpoint(BASE)).options()

    assert caught.value.retry_after == 7.0
    assert _civitai_answer(status, {}, {"Retry-After": "7"}).retry_after == 7.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("12", 12.0), ("0.5", 0.5), ("-3", 0.0), ("", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
def test_retry_after_is_read_as_seconds(header, seconds):
    response = requests.Response()
    if header:
        response.headers["Retry-After"] = header

    assert retry_after_seconds(response) == seconds
