"""A NUL character in the URL is a 400, never a database error."""

import pytest
from django.test import Client

from tests.support import assert_error


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/servers/a%00b",
        "/api/v1/queue/jobs?status=queued%00",
        "/api/v1/queue/jobs?st%00atus=queued",
        "/outputs/a%00b.png",
    ],
)
def test_a_nul_in_the_url_is_a_400_in_the_error_shape(client, url):
    response = client.get(url)

    error = assert_error(response, 400, "malformed_request")
    assert "NUL" in error["message"]


def test_a_nul_in_an_admin_url_is_a_plain_400(admin_user):
    browser = Client()
    browser.force_login(admin_user)

    response = browser.get("/admin/servers_app/server/?q=a%00b")

    assert response.status_code == 400
    assert b"NUL" in response.content


def test_a_nul_in_a_header_is_a_400(client):
    response = client.post(
        "/api/v1/generate", {}, format="json", HTTP_IDEMPOTENCY_KEY="retry\x00-1"
    )

    assert_error(response, 400, "malformed_request")
