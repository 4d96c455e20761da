"""Celery tasks of servers: health checks and the model cache."""

import logging

from celery import shared_task

from servers_app.models import Server
from servers_app.quarantine import server_lift_quarantine
from servers_app.services import server_check_health, server_refresh_models
from servers_app.signals import server_available

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, time_limit=120)
def refresh_server_models(server_id: int) -> None:
    server = Server.objects.filter(pk=server_id).first()
    if server is None:
        logger.info("Server %s is gone; no models to refresh", server_id)
        return
    server_refresh_models(server=server)


@shared_task(ignore_result=True, time_limit=60)
def refresh_all_models() -> None:
    """Periodic: one refresh task per enabled server, so a slow one delays no other."""
    for server_id in Server.objects.filter(enabled=True).values_list("pk", flat=True):
        refresh_server_models.delay(server_id)


@shared_task(ignore_result=True, time_limit=60)
def check_server(server_id: int) -> None:
    """Health-check one server; when it answers, announce it available (`server_available`:
    the queue then runs whatever it may take). A quarantined server whose cooldown has
    passed comes out of quarantine when it answers (servers_app.quarantine)."""
    server = Server.objects.filter(pk=server_id).first()
    if server is None:
        logger.info("Server %s is gone; nothing to check", server_id)
        return
    health = server_check_health(server=server)
    if health.online:
        lifted = server.quarantined_at is not None and server_lift_quarantine(server_id=server.pk)
        came_back = health.came_back or lifted
        server_available.send(sender=Server, server_id=server.pk, came_back=came_back)
