"""Paging parameters out of the database's integer range are a 400."""

import pytest

from tests.support import assert_error


@pytest.mark.parametrize("offset", [2**63, 2**63 - 1, 2**64 + 5, 10**30])
def test_an_offset_beyond_the_database_range_is_a_400(client, offset):
    response = client.get(f"/api/v1/queue/jobs?offset={offset}")

    error = assert_error(response, 400, "validation_error")
    assert "offset" in error["fields"]


def test_a_huge_limit_is_a_400(client):
    response = client.get(f"/api/v1/queue/jobs?limit={2**64}")

    error = assert_error(response, 400, "validation_error")
    assert "limit" in error["fields"]


def test_a_large_offset_in_range_is_an_empty_page(client, job):
    response = client.get("/api/v1/queue/jobs?offset=1000000000000")

    assert response.status_code == 200
    assert response.json()["jobs"] == []
