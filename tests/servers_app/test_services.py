"""Writes of servers: what a create leaves behind, and what it refuses."""

import pytest

from core_app.errors import InvalidInput
from servers_app.models import Server
from servers_app.services import server_create


def test_a_new_server_is_health_checked_after_commit(
    db, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        server = server_create(data={"alias": "New", "api_url": "http://127.0.0.1:9"})

    assert [(name, args) for name, args, _ in published] == [
        ("servers_app.tasks.check_server", (server.pk,))
    ]


def test_a_server_the_rules_refuse_is_invalid_input_field_by_field(db):
    with pytest.raises(InvalidInput) as refused:
        server_create(data={"alias": "Bad", "api_url": "ftp://127.0.0.1:9"})

    assert refused.value.fields == {"api_url": ["The URL must start with http:// or https://."]}
    assert not Server.objects.filter(alias="Bad").exists()
