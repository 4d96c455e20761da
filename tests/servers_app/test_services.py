"""Writes of servers: what a create leaves behind, and what it refuses."""

import pytest

from core_app.errors import InvalidInput
from servers_app.models import Server
from servers_app.services import (
    server_create,
    server_forget_models,
    server_remember_vae_baseline,
)


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


def test_the_servers_own_vae_setting_read_first_is_kept(server):
    server_remember_vae_baseline(server_id=server.pk, setting="sd_vae", value="mine.pt")

    # A second read (another job's VAE already on the server) changes nothing.
    kept = server_remember_vae_baseline(server_id=server.pk, setting="sd_vae", value="job.pt")

    assert kept == {"sd_vae": "mine.pt"}
    server.refresh_from_db()
    assert server.vae_baseline == {"sd_vae": "mine.pt"}


def test_each_vae_setting_is_remembered_on_its_own(server):
    server_remember_vae_baseline(server_id=server.pk, setting="sd_vae", value="Automatic")

    both = server_remember_vae_baseline(
        server_id=server.pk, setting="forge_additional_modules", value=["/m/ae.safetensors"]
    )

    assert both == {"sd_vae": "Automatic", "forge_additional_modules": ["/m/ae.safetensors"]}


def test_a_new_address_forgets_the_old_servers_vae_settings(server):
    server_remember_vae_baseline(server_id=server.pk, setting="sd_vae", value="mine.pt")

    server_forget_models(server_id=server.pk)

    server.refresh_from_db()
    assert server.vae_baseline == {}
