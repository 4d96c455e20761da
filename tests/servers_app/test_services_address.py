"""A server's new address or credentials forget what MobileSD learnt of the old one."""

import pytest
from django.utils import timezone
from model_bakery import baker

from servers_app.model_cache import checkpoint_rows
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.services import server_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def known() -> Server:
    server = baker.make(
        Server,
        alias="Laptop",
        api_url="http://127.0.0.1:7860",
        username="me",
        password="pw",
        is_online=True,
        flavour="forge",
        loaded_checkpoint="sd_xl_base_1.0.safetensors [31e35c80fc]",
        models_refreshed_at=timezone.now(),
    )
    (row,) = checkpoint_rows([{"title": "Pony/cyberrealisticPony_v8.safetensors"}])
    CachedModel.objects.create(server=server, **row.fields())
    return server


def _forgotten(server: Server) -> bool:
    server.refresh_from_db()
    return (
        not server.cached_models.filter(kind=ModelKind.CHECKPOINT).exists()
        and server.loaded_checkpoint == ""
        and server.models_refreshed_at is None
        and server.is_online is None
        and server.flavour == ""
    )


@pytest.mark.parametrize(
    "change",
    [{"api_url": "http://127.0.0.1:7861"}, {"username": "other"}, {"password": "new"}],
)
def test_a_new_url_or_credentials_forget_models_loaded_checkpoint_and_online_state(known, change):
    updated = server_update(server=known, data=change, partial=True).server

    assert _forgotten(known)
    assert updated.is_online is None  # the answer shows the server as not yet checked


def test_other_changes_keep_what_was_learnt(known):
    server_update(server=known, data={"slots": 2, "api_url": known.api_url}, partial=True)

    assert not _forgotten(known)
    assert known.cached_models.count() == 1
    assert known.is_online is True
