"""The checker that holds every API answer of the suite to the OpenAPI document
(tests/openapi_check.py, run by the autouse fixture in tests/conftest.py) catches what it
is for: it cannot silently pass."""

from unittest import mock

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import resolve
from rest_framework.response import Response

from core_app.errors import error_body
from core_app.views import HealthView
from servers_app.views import ServerViewSet
from tests.openapi_check import UndocumentedResponse, check_response

HEALTHY = {
    "status": "ok",
    "database": {"ok": True, "detail": "ok"},
    "broker": {"ok": True, "detail": "ok"},
    "cache": {"ok": True, "detail": "ok"},
    "worker": {"ok": True, "detail": "ok"},
    "beat": {"ok": True, "detail": "ok"},
    "storage": {"ok": True, "detail": "ok"},
}


def _request(path: str, method: str = "get"):
    request = getattr(RequestFactory(), method)(path)
    request.resolver_match = resolve(path)
    return request


def test_a_documented_answer_passes(anon_client):
    with mock.patch.object(HealthView, "get", return_value=Response(HEALTHY)):
        response = anon_client.get("/api/v1/health")

    assert response.status_code == 200


def test_an_undeclared_status_fails_the_test_that_got_it(anon_client):
    with (
        mock.patch.object(HealthView, "get", return_value=Response(HEALTHY, status=418)),
        pytest.raises(UndocumentedResponse, match="status 418 is not listed"),
    ):
        anon_client.get("/api/v1/health")


def test_a_body_that_does_not_match_the_schema_fails(client):
    wrong = [{"alias": 5, "api_url": None}]
    with (
        mock.patch.object(ServerViewSet, "list", return_value=Response(wrong)),
        pytest.raises(UndocumentedResponse, match=r"0\.alias"),
    ):
        client.get("/api/v1/servers")


def test_an_error_code_outside_the_enum_fails(client, server):
    body = error_body("Gone fishing.", "gone_fishing")
    with (
        mock.patch.object(ServerViewSet, "retrieve", return_value=Response(body, 404)),
        pytest.raises(UndocumentedResponse, match="code: 'gone_fishing' is not one of"),
    ):
        client.get("/api/v1/servers/Laptop")


def test_a_null_where_the_document_says_not_null_fails(client, server):
    def retrieve(self, request, alias):
        data = dict(self.get_serializer(server).data, alias=None)
        return Response(data)

    with (
        mock.patch.object(ServerViewSet, "retrieve", retrieve),
        pytest.raises(UndocumentedResponse, match="alias"),
    ):
        client.get("/api/v1/servers/Laptop")


def test_a_binary_answer_in_an_unlisted_media_type_fails(db):
    response = HttpResponse(b"GIF89a", content_type="image/gif")

    with pytest.raises(UndocumentedResponse, match="image/gif"):
        check_response(_request("/outputs/0123abcd_1.png"), response)


def test_a_binary_answer_in_a_listed_media_type_passes(db):
    response = HttpResponse(b"\x89PNG\r\n", content_type="image/png")

    check_response(_request("/outputs/0123abcd_1.png"), response)


def test_an_answer_to_a_path_the_document_lacks_must_be_a_404_in_the_error_shape(db):
    request = RequestFactory().get("/api/v1/nothing-here")

    check_response(
        request,
        HttpResponse(
            b'{"message": "x", "error": "x", "code": "not_found"}',
            status=404,
            content_type="application/json",
        ),
    )
    with pytest.raises(UndocumentedResponse, match="no such operation"):
        check_response(request, HttpResponse(b"{}", content_type="application/json"))
    with pytest.raises(UndocumentedResponse, match="error shape"):
        check_response(request, HttpResponse(b"{}", status=404, content_type="application/json"))
