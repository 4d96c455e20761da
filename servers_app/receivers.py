"""servers_app's own reactions to its signals (connected in ServersConfig.ready)."""

import logging
from typing import Any

from django.dispatch import receiver

from servers_app.signals import server_configured
from servers_app.tasks import check_server

logger = logging.getLogger(__name__)


@receiver(server_configured, dispatch_uid="servers_app.check_configured_server")
def check_configured_server(sender: Any, *, server_id: int, **kwargs: Any) -> None:
    """Health-check a new or changed server in the background (which, once it is found
    available, runs its queue)."""
    try:
        check_server.delay(server_id)
    except Exception as exc:  # broker down: the reconcile task checks it later
        logger.warning("Could not queue the check of server %s: %s", server_id, exc)
