"""After a completed download: each target server is asked to rescan the list the file
belongs to (checkpoints, LoRAs, embeddings, VAEs), then MobileSD's cache of its models is
refreshed. Failures are recorded on the target, never on the download: the file is in
place either way.
"""

import logging
import uuid

from django.conf import settings
from django.utils import timezone

from civitai_app.folders import Refresh, refresh_for_folder
from civitai_app.models import Download, DownloadStatus, DownloadTarget, TargetState
from integrations.forge.client import ForgeClient, ForgeError, ForgePermanentError, ServerEndpoint
from servers_app.models import Server
from servers_app.services import server_refresh_models

logger = logging.getLogger(__name__)

# A LoRA rescan does not wait behind the generation lock, so it needs less time.
_LORA_RESCAN_TIMEOUT = 120.0


def download_refresh_servers(*, download_id: str | uuid.UUID) -> None:
    """Ask each target server of a completed download to rescan, then refresh MobileSD's
    cache of its models; each target records when and with what error."""
    download = Download.objects.filter(pk=download_id, status=DownloadStatus.COMPLETED).first()
    if download is None:
        return
    refresh = refresh_for_folder(download.folder)
    if not refresh:
        return
    targets = download.targets.select_related("server").filter(
        state__in=[TargetState.PLACED, TargetState.ALREADY_PRESENT]
    )
    for target in targets:
        server = target.server
        error = _ask_to_rescan(server, refresh)
        if not error:
            error = server_refresh_models(server=server).error
        DownloadTarget.objects.filter(pk=target.pk).update(
            refreshed_at=timezone.now(), refresh_error=error[:2000]
        )
        if error:
            logger.warning("Refresh of %s after download %s: %s", server.alias, download_id, error)


def _ask_to_rescan(server: Server, refresh: Refresh) -> str:
    """The server's rescan of one list; "" when done or when the server has no such call."""
    client = ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=60.0,
    )
    try:
        # The rescans of checkpoints, embeddings and VAEs wait behind the server's
        # generation lock.
        if refresh == "checkpoints":
            client.refresh_checkpoints(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
        elif refresh == "embeddings":
            client.refresh_embeddings(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
        elif refresh == "vae":
            client.refresh_vae(timeout=settings.MOBILESD_FORGE_TIMEOUT_CAP)
        else:
            client.refresh_loras(timeout=_LORA_RESCAN_TIMEOUT)
    except ForgePermanentError as exc:
        # A server without that route (Forge has no VAE list; old A1111 no embeddings
        # rescan) picks the file up on its own or after a restart.
        if exc.status_code != 404:
            return f"The server could not be asked to rescan: {exc}"
    except ForgeError as exc:
        return f"The server could not be asked to rescan: {exc}"
    finally:
        client.close()
    return ""
