"""Writes for servers."""

from typing import Any

from django.db import transaction

from core_app.errors import Conflict
from queue_app.models import ACTIVE_STATUSES
from servers_app.models import Server

UPDATABLE_FIELDS = ("alias", "api_url", "username", "password", "enabled", "slots")


def server_create(*, data: dict[str, Any]) -> Server:
    values = {key: data[key] for key in UPDATABLE_FIELDS if key in data}
    server = Server(**values)
    server.full_clean()
    server.save()
    return server


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
