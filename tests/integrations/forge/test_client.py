"""Unit tests of the Forge/A1111 client; the transport is mocked with `responses`, except for
`on_sent`, which is about the socket: those tests talk to the simulator over real HTTP."""

import base64
import json
import pickle
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import responses
from responses import matchers
from urllib3.exceptions import MaxRetryError, NewConnectionError

from integrations.forge.client import (
    ForgeAuthError,
    ForgeClient,
    ForgeError,
    ForgePermanentError,
    ForgeTimeoutError,
    ForgeTransientError,
    ForgeUnreachableError,
    ServerEndpoint,
)
from integrations.forge.simulator import ForgeSimulator, SimulatorConfig
from integrations.forge.simulator.api import Request

BASE = "http://forge.local:7860"


class RecordingSession(requests.Session):
    """A real session that remembers the timeout of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("timeout"))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def mocked() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def forge() -> ForgeClient:
    return ForgeClient(ServerEndpoint(BASE))


def _png(n: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes([n]) * 16


# --- errors ------------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        404,
        {
            "error": "HTTPException",
            "detail": "Sampler not found",
            "body": "",
            "errors": "404: Sampler not found",
        },
        ForgePermanentError,
        "Sampler not found",
        id="a1111-httpexception-404",
    ),
    pytest.param(
        401,
        {
            "error": "HTTPException",
            "detail": "Incorrect username or password",
            "body": "",
            "errors": "401: Incorrect username or password",
        },
        ForgeAuthError,
        "Incorrect username or password",
        id="a1111-401",
    ),
    pytest.param(
        401, {"detail": "Not authenticated"}, ForgeAuthError, "Not authenticated", id="forge-401"
    ),
    pytest.param(
        500,
        {"error": "RuntimeError", "detail": "", "body": "", "errors": "model 'nope' not found"},
        ForgePermanentError,
        "RuntimeError: model 'nope' not found",
        id="a1111-500-unknown-model",
    ),
    pytest.param(
        500,
        {
            "error": "Exception",
            "detail": "",
            "body": "",
            "message": "could not find upscaler named 4x-Nope",
        },
        ForgePermanentError,
        "Exception: could not find upscaler named 4x-Nope",
        id="forge-500-unknown-upscaler",
    ),
    pytest.param(
        500,
        {
            "error": "Exception",
            "detail": "",
            "body": "",
            "message": "Could not find checkpoint with name refiner.safetensors",
        },
        ForgePermanentError,
        "Exception: Could not find checkpoint with name refiner.safetensors",
        id="forge-500-unknown-refiner",
    ),
    pytest.param(
        500,
        {"error": "KeyError", "detail": "", "body": "", "errors": "'not_an_option'"},
        ForgePermanentError,
        "KeyError: 'not_an_option'",
        id="a1111-500-keyerror",
    ),
    pytest.param(
        500,
        {
            "error": "HTTPException",
            "detail": "Invalid encoded image",
            "body": "",
            "errors": "500: Invalid encoded image",
        },
        ForgePermanentError,
        "Invalid encoded image",
        id="a1111-500-invalid-image",
    ),
    pytest.param(
        422,
        {"detail": "Script 'nope' not found"},
        ForgePermanentError,
        "Script 'nope' not found",
        id="forge-422-script",
    ),
    pytest.param(
        422,
        {
            "detail": [
                {
                    "loc": ["body", "steps"],
                    "msg": "value is not a valid integer",
                    "type": "type_error.integer",
                }
            ]
        },
        ForgePermanentError,
        "steps: value is not a valid integer",
        id="pydantic1-422",
    ),
    pytest.param(
        422,
        {
            "detail": [
                {
                    "type": "int_parsing",
                    "loc": ["body", "steps"],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": "abc",
                },
                {"type": "missing", "loc": ["body", "id_task"], "msg": "Field required"},
            ]
        },
        ForgePermanentError,
        "steps: Input should be a valid integer, unable to parse string as an integer; "
        "id_task: Field required",
        id="pydantic2-422",
    ),
    pytest.param(
        500,
        {
            "error": "OutOfMemoryError",
            "detail": "",
            "body": "",
            "message": "CUDA out of memory. Tried to allocate 2.00 GiB",
        },
        ForgeTransientError,
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        id="forge-500-oom",
    ),
    pytest.param(
        500,
        {"error": "RuntimeError", "detail": "", "body": "", "errors": "device-side assert"},
        ForgeTransientError,
        "RuntimeError: device-side assert",
        id="a1111-500-other",
    ),
    pytest.param(
        502,
        "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>",
        ForgeTransientError,
        "not a Forge/A1111 error (text/html, 81 bytes)",
        id="proxy-502-html",
    ),
    pytest.param(
        503,
        "Service Temporarily Unavailable",
        ForgeTransientError,
        "not a Forge/A1111 error (text/html, 31 bytes)",
        id="proxy-503-text",
    ),
    pytest.param(
        504,
        {"error": "RuntimeError", "detail": "", "body": "", "errors": "model 'x' not found"},
        ForgeTransientError,
        "RuntimeError: model 'x' not found",
        id="gateway-504-always-transient",
    ),
    pytest.param(
        429, {"detail": "Too many requests"}, ForgeTransientError, "Too many requests", id="429"
    ),
    pytest.param(500, "", ForgeTransientError, "Internal Server Error", id="500-empty-body"),
]


@pytest.mark.parametrize(("status", "body", "expected_class", "expected_detail"), ERROR_CASES)
def test_error_response_maps_to_exception_class_and_message(
    mocked: Any,
    forge: ForgeClient,
    status: int,
    body: Any,
    expected_class: type,
    expected_detail: str,
) -> None:
    if isinstance(body, str):
        mocked.post(f"{BASE}/sdapi/v1/txt2img", body=body, status=status, content_type="text/html")
    else:
        mocked.post(f"{BASE}/sdapi/v1/txt2img", json=body, status=status)

    with pytest.raises(ForgeError) as caught:
        forge.txt2img({"prompt": "x"})

    assert type(caught.value) is expected_class
    assert caught.value.detail == expected_detail
    assert caught.value.status_code == status
    assert str(caught.value) == f"POST /sdapi/v1/txt2img, HTTP {status}: {expected_detail}"


def test_error_body_is_kept_parsed(mocked: Any, forge: ForgeClient) -> None:
    body = {"error": "KeyError", "detail": "", "body": "", "message": "'x'"}
    mocked.get(f"{BASE}/sdapi/v1/options", json=body, status=500)

    with pytest.raises(ForgePermanentError) as caught:
        forge.options()

    assert caught.value.body == body


def test_error_survives_pickling() -> None:
    error = ForgeAuthError("Not authenticated", status_code=401, body={"detail": "x"}, path="/p")

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ForgeAuthError
    assert (copy.detail, copy.status_code, copy.body, copy.path) == (
        "Not authenticated",
        401,
        {"detail": "x"},
        "/p",
    )


def test_long_error_detail_is_truncated(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/sd-models", json={"detail": "x" * 5000}, status=500)

    with pytest.raises(ForgeTransientError) as caught:
        forge.sd_models()

    assert len(caught.value.detail) <= 500


def test_redirect_is_not_followed_and_is_permanent(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(
        f"{BASE}/sdapi/v1/sd-models", status=302, headers={"Location": "https://login.example/"}
    )

    with pytest.raises(ForgePermanentError) as caught:
        forge.sd_models()

    assert caught.value.detail == "unexpected redirect: check the URL's scheme, host and port"
    assert "login.example" not in str(caught.value)


@pytest.mark.parametrize(
    ("raised", "expected_class"),
    [
        (requests.exceptions.ConnectionError("reset mid-response"), ForgeTransientError),
        (
            requests.exceptions.ConnectionError(
                MaxRetryError(None, "/", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
            ),
            ForgeUnreachableError,
        ),
        (requests.exceptions.ConnectTimeout("slow"), ForgeUnreachableError),
        (requests.exceptions.ReadTimeout("slow"), ForgeTimeoutError),
        (requests.exceptions.ChunkedEncodingError("dropped"), ForgeTransientError),
        (requests.exceptions.InvalidURL("bad"), ForgePermanentError),
    ],
)
def test_network_failure_maps_to_exception_class(
    mocked: Any, forge: ForgeClient, raised: Exception, expected_class: type
) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", body=raised)

    with pytest.raises(ForgeError) as caught:
        forge.txt2img({"prompt": "x"})

    assert type(caught.value) is expected_class
    assert caught.value.status_code is None
    if expected_class is not ForgePermanentError:
        # Refused, timed out or dropped: one wording, so that no port is told from another.
        assert caught.value.detail == "could not connect to forge.local:7860"


def test_read_timeout_is_transient_and_logged_with_its_length(
    mocked: Any, forge: ForgeClient, caplog: pytest.LogCaptureFixture
) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", body=requests.exceptions.ReadTimeout("slow"))

    with pytest.raises(ForgeTimeoutError):
        forge.txt2img({"prompt": "x"}, timeout=600)

    assert "read timeout of 600" in caplog.text


def test_non_json_success_body_is_transient(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/sd-models", body="<html>router login</html>", status=200)

    with pytest.raises(ForgeTransientError, match="not JSON"):
        forge.sd_models()


FOREIGN_ANSWERS = [
    pytest.param({"token": "internal-secret"}, "application/json", id="json-object"),
    pytest.param(["internal-secret"], "application/json", id="json-list"),
    pytest.param({"detail": {"token": "internal-secret"}}, "application/json", id="detail-dict"),
    pytest.param(
        {"error": "internal-secret here", "errors": "x"}, "application/json", id="bad-class"
    ),
    pytest.param({"detail": "x", "config": "internal-secret"}, "application/json", id="extra-key"),
    pytest.param("<html><title>internal-secret</title></html>", "text/html", id="html"),
    pytest.param("+PONG internal-secret\r\n", "", id="no-type"),
]


@pytest.mark.parametrize(("body", "content_type"), FOREIGN_ANSWERS)
def test_an_unrecognised_error_answer_is_described_never_quoted(
    mocked: Any, forge: ForgeClient, caplog: pytest.LogCaptureFixture, body: Any, content_type: str
) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    mocked.get(f"{BASE}/sdapi/v1/options", body=raw, status=500, content_type=content_type)

    with caplog.at_level("DEBUG"), pytest.raises(ForgeTransientError) as caught:
        forge.options()

    kind = content_type or "no known media type"
    assert caught.value.detail == f"not a Forge/A1111 error ({kind}, {len(raw.encode())} bytes)"
    assert caught.value.body is None
    assert "internal-secret" not in str(caught.value)
    assert "internal-secret" not in caplog.text


def test_a_foreign_media_type_is_not_repeated(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(
        f"{BASE}/sdapi/v1/options",
        body="x",
        status=500,
        headers={"Content-Type": "text/<script>internal-secret</script>"},
    )

    with pytest.raises(ForgeTransientError) as caught:
        forge.options()

    assert caught.value.detail == "not a Forge/A1111 error (no known media type, 1 byte)"


def test_an_empty_error_answer_gets_the_standard_phrase_not_the_servers_reason(
    mocked: Any, forge: ForgeClient
) -> None:
    mocked.get(f"{BASE}/sdapi/v1/options", body="", status=503)

    with pytest.raises(ForgeTransientError) as caught:
        forge.options()

    assert caught.value.detail == "Service Unavailable"


def test_a_success_that_is_not_json_is_described_never_quoted(
    mocked: Any, forge: ForgeClient
) -> None:
    mocked.get(f"{BASE}/sdapi/v1/options", body="<p>internal-secret</p>", content_type="text/html")

    with pytest.raises(ForgeTransientError) as caught:
        forge.options()

    assert caught.value.detail == (
        "the server answered with a body that is not JSON (text/html, 22 bytes)"
    )
    assert caught.value.body is None


@pytest.mark.parametrize(
    ("method", "path", "answer"),
    [
        ("sd_models", "/sdapi/v1/sd-models", ["internal-secret"]),
        ("sd_models", "/sdapi/v1/sd-models", [{"name": "internal-secret"}]),
        ("sd_models", "/sdapi/v1/sd-models", [{"title": "a", "model_name": 3}]),
        ("loras", "/sdapi/v1/loras", [{"title": "internal-secret"}]),
        ("loras", "/sdapi/v1/loras", [1, 2, 3]),
    ],
)
def test_a_list_not_in_the_documented_shape_is_an_error_not_models(
    mocked: Any, forge: ForgeClient, method: str, path: str, answer: Any
) -> None:
    mocked.get(f"{BASE}{path}", json=answer)

    with pytest.raises(ForgeTransientError, match="not in the Forge/A1111 shape") as caught:
        getattr(forge, method)()

    assert "internal-secret" not in str(caught.value)


def test_options_without_a_checkpoint_are_not_a_forge_answer(
    mocked: Any, forge: ForgeClient
) -> None:
    mocked.get(f"{BASE}/sdapi/v1/options", json={"status": "ok"})

    with pytest.raises(ForgeTransientError, match="not in the Forge/A1111 shape"):
        forge.options()


def test_options_before_any_checkpoint_was_chosen_are_read(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/options", json={"sd_model_checkpoint": None, "forge_x": 1})

    assert forge.options() == {"sd_model_checkpoint": None, "forge_x": 1}


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254", "http://0.0.0.0:7860", "http://2130706433:7860", "http://[fe80::1]"],
)
def test_a_refused_url_is_never_called(mocked: Any, url: str) -> None:
    client = ForgeClient(ServerEndpoint(url))

    with pytest.raises(ForgePermanentError, match="the server URL is not allowed"):
        client.options()

    assert len(mocked.calls) == 0


@pytest.mark.parametrize("answer", [{"token": "internal-secret"}, ["x"], {"images": "x"}])
def test_a_txt2img_answer_that_is_not_a_result_is_an_error(
    mocked: Any, forge: ForgeClient, answer: Any
) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", json=answer)

    with pytest.raises(ForgeTransientError, match="without a Forge/A1111 result") as caught:
        forge.txt2img({"prompt": "x"})

    assert caught.value.body is None
    assert "internal-secret" not in str(caught.value)


def test_progress_text_is_kept_only_from_a_documented_progress_answer(
    mocked: Any, forge: ForgeClient
) -> None:
    mocked.post(f"{BASE}/internal/progress", json={"textinfo": "internal-secret"})

    assert forge.progress_for_task("t1").textinfo is None


# --- auth, headers, timeouts -------------------------------------------------------------


def test_basic_auth_is_utf8_so_any_password_works(mocked: Any) -> None:
    expected = "Basic " + base64.b64encode("jürgen:pass€".encode()).decode()
    mocked.get(
        f"{BASE}/sdapi/v1/sd-models",
        json=[],
        match=[matchers.header_matcher({"Authorization": expected})],
    )
    client = ForgeClient(ServerEndpoint(BASE, username="jürgen", password="pass€"))

    assert client.sd_models() == []


def test_basic_auth_header_is_sent_when_username_set(mocked: Any) -> None:
    expected = "Basic " + base64.b64encode(b"alice:s3cret:x").decode()
    mocked.get(
        f"{BASE}/sdapi/v1/sd-models",
        json=[],
        match=[matchers.header_matcher({"Authorization": expected})],
    )
    client = ForgeClient(ServerEndpoint(BASE, username="alice", password="s3cret:x"))

    assert client.sd_models() == []


def test_no_auth_header_without_username(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/sd-models", json=[])

    forge.sd_models()

    assert "Authorization" not in mocked.calls[0].request.headers


def test_user_agent_names_mobilesd(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/loras", json=[])

    forge.loras()

    assert mocked.calls[0].request.headers["User-Agent"].startswith("MobileSD/")


PUBLIC_CALLS = [
    ("txt2img", ({"prompt": "x"},), "POST", "/sdapi/v1/txt2img", {"images": [], "info": "{}"}),
    (
        "progress_for_task",
        ("t1",),
        "POST",
        "/internal/progress",
        {"active": False, "queued": False, "completed": False},
    ),
    (
        "is_task_active",
        ("t1",),
        "POST",
        "/internal/progress",
        {"active": True, "queued": False, "completed": False},
    ),
    ("interrupt", (), "POST", "/sdapi/v1/interrupt", {}),
    ("sd_models", (), "GET", "/sdapi/v1/sd-models", []),
    ("loras", (), "GET", "/sdapi/v1/loras", []),
    ("upscalers", (), "GET", "/sdapi/v1/upscalers", []),
    ("latent_upscale_modes", (), "GET", "/sdapi/v1/latent-upscale-modes", []),
    ("options", (), "GET", "/sdapi/v1/options", {"sd_model_checkpoint": None}),
    ("refresh_checkpoints", (), "POST", "/sdapi/v1/refresh-checkpoints", None),
    ("refresh_loras", (), "POST", "/sdapi/v1/refresh-loras", None),
    ("refresh_embeddings", (), "POST", "/sdapi/v1/refresh-embeddings", None),
    ("refresh_vae", (), "POST", "/sdapi/v1/refresh-vae", None),
]


@pytest.mark.parametrize(("name", "args", "method", "path", "answer"), PUBLIC_CALLS)
def test_every_call_sends_explicit_connect_and_read_timeouts(
    mocked: Any, name: str, args: tuple[Any, ...], method: str, path: str, answer: Any
) -> None:
    mocked.add(method, f"{BASE}{path}", json=answer)
    session = RecordingSession()
    client = ForgeClient(
        ServerEndpoint(BASE), session=session, connect_timeout=3.0, read_timeout=12.0
    )

    getattr(client, name)(*args)

    assert session.timeouts == [(3.0, 12.0)]


def test_txt2img_uses_the_job_timeout_for_reading(mocked: Any) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", json={"images": [], "info": "{}"})
    session = RecordingSession()
    client = ForgeClient(ServerEndpoint(BASE), session=session)

    client.txt2img({"prompt": "x"}, timeout=900.0)

    assert session.timeouts == [(5.0, 900.0)]


# --- txt2img -----------------------------------------------------------------------------


def test_txt2img_posts_payload_and_decodes_images_and_info(mocked: Any, forge: ForgeClient) -> None:
    info = {"seed": 1806652750, "all_seeds": [1806652750, 1806652751], "infotexts": ["a", "b"]}
    mocked.post(
        f"{BASE}/sdapi/v1/txt2img",
        json={
            "images": [base64.b64encode(_png(1)).decode(), base64.b64encode(_png(2)).decode()],
            "parameters": {"prompt": "a cat", "seed": -1},
            "info": json.dumps(info),
        },
        match=[matchers.json_params_matcher({"prompt": "a cat", "force_task_id": "job-1"})],
    )

    result = forge.txt2img({"prompt": "a cat", "force_task_id": "job-1"})

    assert result.images == [_png(1), _png(2)]
    assert result.parameters == {"prompt": "a cat", "seed": -1}
    assert result.info == info
    assert result.raw_info == json.dumps(info)


def test_img2img_posts_to_its_endpoint_and_decodes_as_txt2img(
    mocked: Any, forge: ForgeClient
) -> None:
    body = {"init_images": ["SU5JVA=="], "mask": "TUFTSw==", "force_task_id": "job-2"}
    mocked.post(
        f"{BASE}/sdapi/v1/img2img",
        json={"images": [base64.b64encode(_png(3)).decode()], "parameters": {}, "info": "{}"},
        match=[matchers.json_params_matcher(body)],
    )

    result = forge.img2img(body)

    assert result.images == [_png(3)]


def test_an_img2img_answer_that_is_no_result_is_transient(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/sdapi/v1/img2img", json=["not", "a", "result"])

    with pytest.raises(ForgeTransientError, match="img2img answered without"):
        forge.img2img({"init_images": []})


def test_txt2img_tolerates_data_uri_images_null_images_and_bad_info(
    mocked: Any, forge: ForgeClient
) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(_png(3)).decode()
    mocked.post(
        f"{BASE}/sdapi/v1/txt2img",
        json={"images": [data_uri], "parameters": None, "info": "not json"},
    )

    result = forge.txt2img({})

    assert result.images == [_png(3)]
    assert result.parameters == {}
    assert result.info == {}
    assert result.raw_info == "not json"


def test_txt2img_without_images_returns_empty_list(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", json={"images": None, "info": "{}"})

    assert forge.txt2img({}).images == []


def test_txt2img_with_corrupt_base64_is_transient(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/sdapi/v1/txt2img", json={"images": ["@@@not base64@@@"], "info": ""})

    with pytest.raises(ForgeTransientError, match="image 0 is not valid base64"):
        forge.txt2img({})


# --- progress ----------------------------------------------------------------------------


def test_progress_for_running_task(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={
            "active": True,
            "queued": False,
            "completed": False,
            "progress": 0.45,
            "eta": 12.5,
            "live_preview": None,
            "id_live_preview": 3,
            "textinfo": "Sampling",
        },
        match=[
            matchers.json_params_matcher(
                {"id_task": "job-1", "id_live_preview": -1, "live_preview": False}
            )
        ],
    )

    progress = forge.progress_for_task("job-1")

    assert progress.active is True
    assert progress.progress == 0.45
    assert progress.eta == 12.5
    assert progress.source == "internal"
    assert progress.task_specific is True
    assert progress.queue_position is None


def test_progress_parses_queue_position(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={
            "active": False,
            "queued": True,
            "completed": False,
            "progress": None,
            "eta": None,
            "live_preview": None,
            "id_live_preview": -1,
            "textinfo": "In queue: 2/3",
        },
    )

    progress = forge.progress_for_task("job-2")

    assert progress.queued is True
    assert progress.active is False
    assert progress.queue_position == 2
    assert progress.queue_size == 3
    assert progress.progress is None


def test_progress_of_unknown_task_is_all_false(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={"active": False, "queued": False, "completed": False, "textinfo": "Waiting..."},
    )

    progress = forge.progress_for_task("gone")

    assert (progress.active, progress.queued, progress.completed) == (False, False, False)
    assert progress.textinfo == "Waiting..."


def test_progress_falls_back_to_sdapi_without_web_ui(mocked: Any, forge: ForgeClient) -> None:
    internal = mocked.post(f"{BASE}/internal/progress", json={"detail": "Not Found"}, status=404)
    sdapi = mocked.get(
        f"{BASE}/sdapi/v1/progress",
        json={
            "progress": 0.51,
            "eta_relative": 8.0,
            "state": {
                "skipped": False,
                "interrupted": False,
                "job": "scripts_txt2img",
                "job_count": 1,
                "job_no": 0,
                "sampling_step": 10,
                "sampling_steps": 20,
            },
            "current_image": None,
            "textinfo": None,
        },
        match=[matchers.query_param_matcher({"skip_current_image": "true"})],
    )

    first = forge.progress_for_task("job-1")
    second = forge.progress_for_task("job-1")

    assert first == second
    assert first.source == "sdapi"
    assert first.active is True
    assert first.task_specific is False
    assert (first.step, first.total_steps) == (10, 20)
    assert first.progress == 0.51
    assert first.eta == 8.0
    # The 404 is remembered: the second probe goes straight to /sdapi/v1/progress.
    assert internal.call_count == 1
    assert sdapi.call_count == 2


def test_sdapi_progress_of_idle_server(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/internal/progress", json={"detail": "Not Found"}, status=404)
    mocked.get(
        f"{BASE}/sdapi/v1/progress",
        json={"progress": 0, "eta_relative": 0, "state": {"job_count": 0, "job": ""}},
    )

    progress = forge.progress_for_task("job-1")

    assert progress.active is False
    assert progress.progress is None
    assert progress.eta is None
    assert progress.step is None


def test_is_task_active_only_for_the_running_task(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={"active": True, "queued": False, "completed": False},
        match=[matchers.json_params_matcher({"id_task": "ours"}, strict_match=False)],
    )
    mocked.post(
        f"{BASE}/internal/progress",
        json={"active": False, "queued": False, "completed": False},
        match=[matchers.json_params_matcher({"id_task": "other"}, strict_match=False)],
    )

    assert forge.is_task_active("ours") is True
    assert forge.is_task_active("other") is False


def test_is_task_active_is_false_when_server_cannot_tell(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/internal/progress", json={"detail": "Not Found"}, status=404)
    mocked.get(
        f"{BASE}/sdapi/v1/progress",
        json={"progress": 0.3, "eta_relative": 4, "state": {"job_count": 1}},
    )

    assert forge.is_task_active("job-1") is False


def test_sdapi_progress_with_current_task_is_task_specific(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/internal/progress", json={"detail": "Not Found"}, status=404)
    mocked.get(
        f"{BASE}/sdapi/v1/progress",
        json={"progress": 0.3, "state": {"job_count": 1}, "current_task": "job-1"},
    )

    assert forge.is_task_active("job-1") is True
    assert forge.is_task_active("job-2") is False


def test_progress_auth_error_is_raised_not_fallen_back(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(f"{BASE}/internal/progress", json={"detail": "Not authenticated"}, status=401)

    with pytest.raises(ForgeAuthError):
        forge.progress_for_task("job-1")


# --- live previews -----------------------------------------------------------------------

RUNNING = {"active": True, "queued": False, "completed": False, "progress": 0.4, "eta": 3.0}


def test_progress_asks_for_previews_newer_than_the_last_one(
    mocked: Any, forge: ForgeClient
) -> None:
    image = _png(7)
    mocked.post(
        f"{BASE}/internal/progress",
        json={
            **RUNNING,
            "live_preview": "data:image/png;base64," + base64.b64encode(image).decode(),
            "id_live_preview": 5,
        },
        match=[
            matchers.json_params_matcher(
                {"id_task": "job-1", "id_live_preview": 4, "live_preview": True}
            )
        ],
    )

    progress = forge.progress_for_task("job-1", live_preview_id=4)

    assert (progress.preview, progress.preview_id) == (image, 5)


def test_progress_without_a_preview_id_asks_for_no_preview(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={**RUNNING, "live_preview": None, "id_live_preview": -1},
        match=[
            matchers.json_params_matcher(
                {"id_task": "job-1", "id_live_preview": -1, "live_preview": False}
            )
        ],
    )

    progress = forge.progress_for_task("job-1")

    assert (progress.preview, progress.preview_id) == (None, None)


def test_an_answer_without_a_new_preview_has_none(mocked: Any, forge: ForgeClient) -> None:
    mocked.post(
        f"{BASE}/internal/progress", json={**RUNNING, "live_preview": None, "id_live_preview": 4}
    )

    progress = forge.progress_for_task("job-1", live_preview_id=4)

    assert (progress.preview, progress.preview_id) == (None, None)
    assert progress.progress == 0.4


@pytest.mark.parametrize(
    "live_preview",
    ["data:image/png;base64,***", "iVBORw0KGgo=", "data:text/html;base64,PGI+", 12],
)
def test_a_damaged_preview_is_dropped_and_the_progress_kept(
    mocked: Any, forge: ForgeClient, live_preview: Any
) -> None:
    mocked.post(
        f"{BASE}/internal/progress",
        json={**RUNNING, "live_preview": live_preview, "id_live_preview": 2},
    )

    progress = forge.progress_for_task("job-1", live_preview_id=1)

    assert (progress.preview, progress.preview_id) == (None, None)
    assert progress.active is True


def test_sdapi_progress_sends_the_current_image_when_previews_are_asked_for(
    mocked: Any, forge: ForgeClient
) -> None:
    image = _png(3)
    mocked.post(f"{BASE}/internal/progress", json={"detail": "Not Found"}, status=404)
    mocked.get(
        f"{BASE}/sdapi/v1/progress",
        json={
            "progress": 0.3,
            "eta_relative": 2.0,
            "state": {"job_count": 1, "sampling_step": 3, "sampling_steps": 10},
            "current_image": base64.b64encode(image).decode(),
            "textinfo": None,
        },
        match=[matchers.query_param_matcher({"skip_current_image": "false"})],
    )

    progress = forge.progress_for_task("job-1", live_preview_id=-1)

    assert (progress.preview, progress.preview_id) == (image, None)


def test_previews_from_the_simulator_come_one_id_after_another(sim: ForgeSimulator) -> None:
    requests.post(f"{sim.url}/sdapi/v1/options", json={"show_progress_every_n_steps": 1}, timeout=5)
    client = ForgeClient(ServerEndpoint(sim.url))
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(client.txt2img, {"force_task_id": "pv", "steps": 1000, "width": 64})
        try:
            ids: list[int] = []
            last = -1
            deadline = time.monotonic() + 10
            while len(ids) < 3 and time.monotonic() < deadline:
                progress = ForgeClient(ServerEndpoint(sim.url)).progress_for_task(
                    "pv", live_preview_id=last
                )
                if progress.preview is not None:
                    assert progress.preview.startswith(b"\x89PNG")
                    assert progress.preview_id is not None
                    ids.append(progress.preview_id)
                    last = progress.preview_id
        finally:
            client.interrupt()
            job.result(timeout=10)
            requests.post(
                f"{sim.url}/sdapi/v1/options", json={"show_progress_every_n_steps": 10}, timeout=5
            )

    assert len(ids) == 3
    assert ids == sorted(set(ids))


# --- other calls -------------------------------------------------------------------------


def test_interrupt_posts(mocked: Any, forge: ForgeClient) -> None:
    call = mocked.post(f"{BASE}/sdapi/v1/interrupt", json={})

    forge.interrupt()

    assert call.call_count == 1


def test_sd_models_returns_list(mocked: Any, forge: ForgeClient) -> None:
    models = [{"title": "Pony\\x.safetensors [9f90c59f3a]", "model_name": "Pony_x"}]
    mocked.get(f"{BASE}/sdapi/v1/sd-models", json=models)

    assert forge.sd_models() == models


def test_list_endpoint_answering_an_object_is_an_error(mocked: Any, forge: ForgeClient) -> None:
    mocked.get(f"{BASE}/sdapi/v1/sd-models", json={"unexpected": True})

    with pytest.raises(ForgeTransientError, match="expected a JSON list"):
        forge.sd_models()


# --- endpoint ----------------------------------------------------------------------------


class _Server:
    api_url = "http://192.168.1.20:7860/sdapi/v1/"
    username = "bob"
    password = "hunter2"


def test_endpoint_from_server_normalises_url() -> None:
    endpoint = ServerEndpoint.from_server(_Server())

    assert endpoint == ServerEndpoint("http://192.168.1.20:7860", "bob", "hunter2")
    assert endpoint.url("/sdapi/v1/txt2img") == "http://192.168.1.20:7860/sdapi/v1/txt2img"


def test_endpoint_repr_hides_password() -> None:
    assert "hunter2" not in repr(ServerEndpoint.from_server(_Server()))


def test_endpoint_from_server_treats_none_credentials_as_empty() -> None:
    class Anonymous:
        api_url = "http://pc:7861"
        username = None
        password = None

    assert ServerEndpoint.from_server(Anonymous()) == ServerEndpoint("http://pc:7861")


def test_password_is_not_logged(mocked: Any, caplog: pytest.LogCaptureFixture) -> None:
    mocked.get("http://pc:7860/sdapi/v1/sd-models", status=500, body="boom")
    client = ForgeClient(ServerEndpoint("http://pc:7860", "bob", "hunter2"))

    with caplog.at_level("DEBUG", logger="integrations.forge.client"), pytest.raises(ForgeError):
        client.sd_models()

    assert caplog.records
    assert "hunter2" not in caplog.text


def test_url_with_credentials_is_refused_before_anything_is_sent(
    mocked: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = ForgeClient(ServerEndpoint("http://bob:hunter2@pc:7860", "bob", "hunter2"))

    with caplog.at_level("DEBUG"), pytest.raises(ForgePermanentError) as caught:
        client.sd_models()

    assert "not allowed" in caught.value.detail
    assert len(mocked.calls) == 0
    assert "hunter2" not in caplog.text


def test_refused_connection_is_unreachable_against_a_real_closed_port() -> None:
    """No mock: nothing listens on port 9 of localhost, so the request never leaves."""
    client = ForgeClient(ServerEndpoint("http://127.0.0.1:9"), connect_timeout=2)

    with pytest.raises(ForgeUnreachableError, match=r"could not connect to 127\.0\.0\.1:9"):
        client.sd_models()


# --- on_sent (real HTTP, simulator) ------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[ForgeSimulator]:
    with ForgeSimulator(SimulatorConfig(seconds_per_step=0.01)) as simulator:
        yield simulator
        simulator.faults.clear()


@pytest.fixture
def received(sim: ForgeSimulator, monkeypatch: pytest.MonkeyPatch) -> list[Request]:
    """Every request the simulator parses, with its headers and body as they arrived."""
    seen: list[Request] = []
    handle = sim.api.handle

    def recording(request: Request) -> Any:
        seen.append(request)
        return handle(request)

    monkeypatch.setattr(sim.api, "handle", recording)
    return seen


def test_on_sent_is_called_once_when_the_whole_request_is_out_before_the_answer(
    sim: ForgeSimulator,
) -> None:
    # ~230 KB: the body goes out in many blocks, and the task id is at its very end.
    prompt = "a red fox in the snow, " * 10_000
    payload = {"prompt": prompt, "steps": 1000, "force_task_id": "job-1"}  # ~10 s of sampling
    order: list[str] = []
    finished_when_sent: list[int] = []

    def on_sent() -> None:
        # This thread is held here: the server can only parse the JSON and start the task
        # if the whole body was already written.
        sim.wait_for_event("txt2img_started", lambda e: e["task_id"] == "job-1", timeout=10)
        finished_when_sent.append(len(sim.events.of_type("txt2img_finished")))
        order.append("sent")
        requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=10)  # no need to wait 10 s

    with ForgeClient(ServerEndpoint(sim.url)) as forge:
        result = forge.txt2img(payload, on_sent=on_sent)
    order.append("returned")

    assert order == ["sent", "returned"]
    assert finished_when_sent == [0]  # called while the answer was still to come
    assert result.parameters["prompt"] == prompt
    assert result.parameters["steps"] == 1000
    assert result.info["prompt"] == prompt
    assert sim.wait_for_event("txt2img_finished")["task_id"] == "job-1"


@pytest.mark.parametrize("signalled", [False, True], ids=["plain", "on_sent"])
def test_txt2img_sends_json_with_a_content_length(
    sim: ForgeSimulator, received: list[Request], signalled: bool
) -> None:
    payload = {"prompt": "a cat", "steps": 2, "force_task_id": "job-2"}
    calls: list[None] = []

    with ForgeClient(ServerEndpoint(sim.url)) as forge:
        forge.txt2img(payload, on_sent=(lambda: calls.append(None)) if signalled else None)

    (request,) = received
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    assert "transfer-encoding" not in request.headers  # not chunked
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("MobileSD/")
    assert json.loads(request.body) == payload
    assert len(calls) == int(signalled)


@pytest.mark.parametrize("kept_alive", [False, True], ids=["new-connection", "kept-alive"])
def test_on_sent_is_not_called_when_the_connection_is_refused(
    sim: ForgeSimulator, kept_alive: bool
) -> None:
    calls: list[None] = []

    with ForgeClient(ServerEndpoint(sim.url)) as forge:
        if kept_alive:
            forge.options()  # a pooled connection, which refusing connections closes
        sim.faults.refuse_connections = True

        with pytest.raises(ForgeUnreachableError, match="could not connect"):
            forge.txt2img({"prompt": "x", "steps": 1}, on_sent=lambda: calls.append(None))

    assert calls == []
    assert sim.request_count("POST", "/sdapi/v1/txt2img") == 0


def test_on_sent_is_called_when_the_connection_drops_after_the_request_is_out(
    sim: ForgeSimulator,
) -> None:
    sim.faults.drop_mid_job = 1
    calls: list[None] = []

    with (
        ForgeClient(ServerEndpoint(sim.url)) as forge,
        pytest.raises(ForgeTransientError) as caught,
    ):
        forge.txt2img({"steps": 10, "force_task_id": "job-3"}, on_sent=lambda: calls.append(None))

    # Sent, then lost: not "unreachable", the job may run on the server.
    assert type(caught.value) is ForgeTransientError
    assert calls == [None]
    assert sim.wait_for_event("connection_dropped")["task_id"] == "job-3"
