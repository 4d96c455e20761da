"""servers_app.credentials: what counts as the same origin, and that a stored password only
ever goes there."""

import base64

import pytest
import responses
from model_bakery import baker

from servers_app.credentials import url_origin
from servers_app.models import Server
from servers_app.services import server_check_health, server_refresh_models


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://gpu:7860", "http://gpu:7860/sdapi/v1"),
        ("http://GPU:7860", "http://gpu:7860"),
        ("http://gpu", "http://gpu:80"),
        ("https://gpu/", "https://gpu:443/forge"),
        ("http://user@gpu:7860", "http://gpu:7860"),
    ],
)
def test_same_origin(a, b):
    assert url_origin(a) == url_origin(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("http://gpu:7860", "https://gpu:7860"),
        ("http://gpu:7860", "http://gpu:7861"),
        ("http://gpu:7860", "http://gpu.evil:7860"),
        ("http://gpu", "http://gpu:443"),
    ],
)
def test_other_origin(a, b):
    assert url_origin(a) != url_origin(b)


def test_unreadable_url_has_no_origin():
    assert url_origin("http://gpu:notaport") is None


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://other-host:7860", "http://gpu:7861", "https://gpu:7860"])
def test_a_patch_to_another_origin_never_sends_the_old_password_there(client, url):
    baker.make(Server, alias="L", api_url="http://gpu:7860", username="sd", password="s3cret")
    assert client.patch("/api/v1/servers/L", {"api_url": url}, format="json").status_code == 200
    server = Server.objects.get(alias="L")

    with responses.RequestsMock(assert_all_requests_are_fired=False) as new_host:
        new_host.get(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": None})
        new_host.get(f"{url}/sdapi/v1/sd-models", json=[])
        new_host.get(f"{url}/sdapi/v1/loras", json=[])
        server_check_health(server=server)
        server_refresh_models(server=server)
        sent = [call.request.headers.get("Authorization") for call in new_host.calls]

    assert len(sent) >= 3  # the health check, then the checkpoints and LoRAs read
    # The username stays (it is shown anyway); the password was dropped with the origin.
    assert sent == ["Basic " + base64.b64encode(b"sd:").decode()] * len(sent)
