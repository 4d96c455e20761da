"""Writes for servers."""

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core_app.errors import Conflict
from queue_app.models import ACTIVE_STATUSES
from servers_app.models import Server

logger = logging.getLogger(__name__)

UPDATABLE_FIELDS = ("alias", "api_url", "username", "password", "enabled", "slots")


def server_create(*, data: dict[str, Any]) -> Server:
    values = {key: data[key] for key in UPDATABLE_FIELDS if key in data}
    server = Server(**values)
    server.full_clean()
    server.save()
    transaction.on_commit(lambda: _check_soon(server.pk))
    return server


def _check_soon(server_id: int) -> None:
    """Health-check a new or changed server in the background; that also runs its queue."""
    from queue_app.tasks import check_server

    try:
        check_server.delay(server_id)
    except Exception as exc:  # broker down: the reconcile task checks it later
        logger.warning("Could not queue the check of server %s: %s", server_id, exc)


@transaction.atomic
def server_update(*, server: Server, data: dict[str, Any], partial: bool) -> Server:
    """Update a server. Renaming its alias keeps its jobs (they point at the row and
    follow the new name).

    A full update resets what it leaves out to the defaults, except the password, which a
    client cannot read back and so is only changed when given. Clearing the username
    clears the password with it.
    """
    server = Server.objects.select_for_update().get(pk=server.pk)
    old_alias = server.alias
    defaults = {"username": "", "enabled": True, "slots": 1}
    for key in UPDATABLE_FIELDS:
        if key in data:
            setattr(server, key, data[key])
        elif not partial and key in defaults:
            setattr(server, key, defaults[key])
    if not server.username:
        server.password = ""
    server.full_clean()
    server.save()
    if server.alias != old_alias:
        # Jobs keep the alias as text too, so they still name the server once it is gone.
        server.jobs.filter(target_server_alias=old_alias).update(target_server_alias=server.alias)
    transaction.on_commit(lambda: _check_soon(server.pk))
    return server


@transaction.atomic
def server_delete(*, server: Server) -> None:
    """Delete a server unless it has pending or processing jobs.

    The row lock makes the check and the delete one step against a concurrent submit
    (job_submit locks the same row).
    """
    server = Server.objects.select_for_update().get(pk=server.pk)
    active = server.jobs.filter(status__in=ACTIVE_STATUSES).count()
    if active:
        raise Conflict(
            f"Server '{server.alias}' has {active} pending or processing job(s); cancel or "
            "delete them first, or disable the server instead.",
            code="server_has_active_jobs",
        )
    server.delete()


def server_mark_offline(*, server_id: int, error: str) -> None:
    """Record that the server cannot be reached; its jobs wait until it is back."""
    now = timezone.now()
    Server.objects.filter(pk=server_id).update(
        is_online=False, last_checked_at=now, last_error=error[:2000]
    )
    logger.warning("Server %s is offline: %s", server_id, error)


def server_note_loaded_checkpoint(*, server_id: int, title: str) -> None:
    """After a job ran with `title`, the server has that checkpoint loaded (we send
    override_settings_restore_afterwards=false), which the scheduler prefers."""
    now = timezone.now()
    Server.objects.filter(pk=server_id).update(
        loaded_checkpoint=title, is_online=True, last_seen_at=now, last_error=""
    )


@dataclass(frozen=True)
class HealthResult:
    online: bool
    came_back: bool
    error: str = ""


def server_check_health(*, server: Server) -> HealthResult:
    """Ask the server for its options and checkpoints; record online state, loaded
    checkpoint, flavour (Forge or A1111) and the checkpoint titles."""
    from servers_app.client import ForgeClient, ForgeError, ServerEndpoint

    was_online = server.is_online
    now = timezone.now()
    client = ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=15.0,
    )
    try:
        options = client.options()
        titles = [str(model.get("title", "")) for model in client.sd_models()]
    except ForgeError as exc:
        Server.objects.filter(pk=server.pk).update(
            is_online=False, last_checked_at=now, last_error=str(exc)[:2000]
        )
        if was_online is not False:
            logger.warning("Server %s is offline: %s", server.alias, exc)
        return HealthResult(online=False, came_back=False, error=str(exc))
    finally:
        client.close()
    flavour = "forge" if any(key.startswith("forge_") for key in options) else "a1111"
    Server.objects.filter(pk=server.pk).update(
        is_online=True,
        last_checked_at=now,
        last_seen_at=now,
        last_error="",
        flavour=flavour,
        loaded_checkpoint=str(options.get("sd_model_checkpoint") or ""),
        model_titles=titles,
    )
    came_back = was_online is not True
    if came_back:
        logger.info("Server %s is online (%s, %d checkpoints)", server.alias, flavour, len(titles))
    return HealthResult(online=True, came_back=came_back)
