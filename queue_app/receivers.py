"""The queue's answers to what servers_app announces (servers_app/signals.py); connected in
QueueConfig.ready."""

from typing import Any

from django.dispatch import receiver

from core_app.errors import Conflict
from queue_app.models import ACTIVE_STATUSES, Job
from queue_app.tasks import nudge, servers_with_work
from servers_app.models import Server
from servers_app.signals import server_available, server_deleting


@receiver(server_available, dispatch_uid="queue_app.run_available_server")
def run_available_server(sender: Any, *, server_id: int, **kwargs: Any) -> None:
    """A server that answers runs whatever it may take now."""
    nudge(servers_with_work(Server.objects.filter(pk=server_id)))


@receiver(server_deleting, dispatch_uid="queue_app.keep_server_with_active_jobs")
def keep_server_with_active_jobs(sender: Any, *, server: Server, **kwargs: Any) -> None:
    """A server with pending or processing jobs is not deleted: they would lose where
    they run. (Sent with the server row locked, which a submit locks too.)"""
    active = Job.objects.filter(server=server, status__in=ACTIVE_STATUSES).count()
    if active:
        raise Conflict(
            f"Server '{server.alias}' has {active} pending or processing job(s); cancel or "
            "delete them first, or disable the server instead.",
            code="server_has_active_jobs",
        )
