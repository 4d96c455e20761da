"""Writes for servers."""

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from core_app.errors import InvalidInput
from servers_app.credentials import credentials_resolve
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.signals import server_available, server_configured, server_deleting

logger = logging.getLogger(__name__)

UPDATABLE_FIELDS = ("alias", "api_url", "username", "password", "enabled", "slots", "models_dir")
CREDENTIAL_FIELDS = ("username", "password")
# Fields that say which machine MobileSD talks to: changing one makes what it learnt of the
# server (models, loaded checkpoint, flavour, online state) somebody else's.
_ENDPOINT_FIELDS = ("api_url", "username", "password")


def _validate(server: Server) -> None:
    """The model's own rules (URL, alias, models folder, unique alias) as MobileSD's error."""
    try:
        server.full_clean()
    except DjangoValidationError as exc:
        raise InvalidInput(exc.message_dict) from exc


def server_create(*, data: dict[str, Any]) -> Server:
    values = {key: data[key] for key in UPDATABLE_FIELDS if key in data}
    server = Server(**values)
    _validate(server)
    server.save()
    _announce_configured(server.pk)
    return server


def _announce_configured(server_id: int) -> None:
    """Once committed, tell whoever listens (the health check) that the server changed."""
    transaction.on_commit(lambda: server_configured.send(sender=Server, server_id=server_id))


@dataclass(frozen=True)
class ServerUpdated:
    """A server as `server_update` left it, and whether its stored password was dropped
    because the URL moved to another origin without one (the caller tells the user)."""

    server: Server
    password_dropped: bool


@transaction.atomic
def server_update(*, server: Server, data: dict[str, Any], partial: bool) -> ServerUpdated:
    """Update a server. Renaming its alias keeps its jobs (they point at the row and
    follow the new name).

    A full update resets what it leaves out to the defaults, except the credentials, which
    follow `credentials_resolve`: kept unless changed or cleared, and the password dropped
    when the URL moves to another origin without one. A new URL or new credentials forget
    what was learnt of the server (`server_forget_models`) in the same transaction.
    """
    server = Server.objects.select_for_update().get(pk=server.pk)
    old_alias = server.alias
    old_endpoint = [getattr(server, key) for key in _ENDPOINT_FIELDS]
    credentials = credentials_resolve(server=server, data=data)
    defaults = {"enabled": True, "slots": 1, "models_dir": ""}
    for key in UPDATABLE_FIELDS:
        if key in CREDENTIAL_FIELDS:
            continue
        if key in data:
            setattr(server, key, data[key])
        elif not partial and key in defaults:
            setattr(server, key, defaults[key])
    server.username, server.password = credentials.username, credentials.password
    _validate(server)
    server.save()
    if [getattr(server, key) for key in _ENDPOINT_FIELDS] != old_endpoint:
        server_forget_models(server_id=server.pk)
        server.refresh_from_db()
    if server.alias != old_alias:
        # Jobs keep the alias as text too, so they still name the server once it is gone.
        server.jobs.filter(target_server_alias=old_alias).update(target_server_alias=server.alias)
    _announce_configured(server.pk)
    return ServerUpdated(server=server, password_dropped=credentials.password_dropped)


def server_pause(*, server: Server) -> Server:
    """Pause the server: the job running there finishes, no new one starts (the claim and
    the reserved start read `paused_at`). Pausing a paused server keeps its first time."""
    Server.objects.filter(pk=server.pk, paused_at__isnull=True).update(paused_at=timezone.now())
    server.refresh_from_db()
    logger.info("Paused server %s", server.alias)
    return server


def server_resume(*, server: Server) -> Server:
    """Resume a paused server; once committed, announce it available (the queue runs it)."""
    resumed = Server.objects.filter(pk=server.pk, paused_at__isnull=False).update(paused_at=None)
    server.refresh_from_db()
    if resumed:
        server_id = server.pk
        transaction.on_commit(
            lambda: server_available.send(sender=Server, server_id=server_id, came_back=False)
        )
        logger.info("Resumed server %s", server.alias)
    return server


@transaction.atomic
def server_delete(*, server: Server) -> None:
    """Delete a server unless a receiver of `server_deleting` refuses (the queue does while
    the server has pending or processing jobs).

    The row lock makes the check and the delete one step against a concurrent submit
    (job_submit locks the same row).
    """
    server = Server.objects.select_for_update().get(pk=server.pk)
    server_deleting.send(sender=Server, server=server)
    server.delete()


def server_forget_models(*, server_id: int) -> None:
    """Forget what MobileSD learnt from the server's old address: its cached models, its
    loaded checkpoint, its flavour, when its models were read, and whether it is online
    (back to unknown, so that its next health check counts as a return and re-reads the
    models).

    Called in the transaction that changes the address, so no job is ever resolved against
    the old machine's catalogue: until the check has run, a job's checkpoint is not found
    in the (empty) cache and its dispatch reads the new server's list first.
    """
    CachedModel.objects.filter(server_id=server_id).delete()
    Server.objects.filter(pk=server_id).update(
        is_online=None,
        loaded_checkpoint="",
        flavour="",
        models_refreshed_at=None,
        models_stale=False,
        models_error="",
        listed_kinds=[],
        vae_baseline={},
    )
    logger.info("Server %s changed address or credentials; its models will be re-read", server_id)


def server_remember_vae_baseline(*, server_id: int, setting: str, value: Any) -> dict[str, Any]:
    """Remember `value` as the server's own value of the VAE setting `setting`, read before
    MobileSD first changes it; a value remembered already is kept (it is the owner's, the
    one just read may be another job's). Returns the server's baseline, {} if it is gone.

    Under the server row's lock: two jobs reading the options at once keep the first."""
    with transaction.atomic():
        server = Server.objects.select_for_update().filter(pk=server_id).first()
        if server is None:
            return {}
        baseline = dict(server.vae_baseline or {})
        if setting not in baseline:
            baseline[setting] = value
            Server.objects.filter(pk=server_id).update(vae_baseline=baseline)
            logger.info("Server %s: its own %s is %r", server.alias, setting, value)
    return baseline


def server_forget_vae_baseline(*, server: Server) -> Server:
    """Forget the server's remembered VAE settings (after its owner chose others in its web
    UI): jobs naming no VAE send nothing again until a job changes one."""
    Server.objects.filter(pk=server.pk).update(vae_baseline={})
    server.vae_baseline = {}
    logger.info("Server %s: its remembered VAE settings were forgotten", server.alias)
    return server


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
    from integrations.forge.client import ForgeClient, ForgeError, ServerEndpoint

    was_online = server.is_online
    now = timezone.now()
    client = ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=15.0,
    )
    try:
        options = client.options()
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
    found = Server.objects.filter(pk=server.pk).update(
        is_online=True,
        last_checked_at=now,
        last_seen_at=now,
        last_error="",
        flavour=flavour,
        loaded_checkpoint=str(options.get("sd_model_checkpoint") or ""),
    )
    if not found:
        return _deleted_while_checked(server)
    came_back = was_online is not True
    if came_back:
        logger.info("Server %s is online (%s)", server.alias, flavour)
        # Its model list may have changed while it was away.
        if server_refresh_models(server=server).gone:
            return _deleted_while_checked(server)
    return HealthResult(online=True, came_back=came_back)


def _deleted_while_checked(server: Server) -> HealthResult:
    """A server deleted while it was being checked: nothing to record, nobody to tell."""
    logger.info("Server %s was deleted during its health check", server.alias)
    return HealthResult(online=False, came_back=False, error="The server was deleted.")


@dataclass(frozen=True)
class RefreshResult:
    """What a model-cache refresh did; `error` set means the server could not be read and
    the last good list was kept, marked stale; `gone`: the server was deleted while its list
    was read, and nothing was cached."""

    checkpoints: int = 0
    loras: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0
    error: str = ""
    gone: bool = False


def server_refresh_models(*, server: Server) -> RefreshResult:
    """Replace the server's cached checkpoints and LoRAs with what it lists now.

    A server that cannot be read keeps its last good list, marked stale, never emptied.
    The replacement is one transaction: readers see the old list or the new one.
    """
    from integrations.forge.client import ForgeClient, ForgeError, ServerEndpoint
    from servers_app.extension_cache import extension_lists_read
    from servers_app.model_cache import checkpoint_rows, lora_rows

    client = ForgeClient(
        ServerEndpoint.from_server(server),
        connect_timeout=settings.MOBILESD_FORGE_CONNECT_TIMEOUT,
        read_timeout=60.0,
    )
    try:
        listed = checkpoint_rows(client.sd_models()) + lora_rows(client.loras())
        # The other lists (VAEs, modules, upscalers, styles, scripts, ControlNet models):
        # one the server lacks or fails to give is not listed, its old rows kept untrusted.
        extensions = extension_lists_read(client, flavour=server.flavour)
        listed += extensions.rows
        replaced = {str(ModelKind.CHECKPOINT), str(ModelKind.LORA), *extensions.listed}
    except ForgeError as exc:
        Server.objects.filter(pk=server.pk).update(models_stale=True, models_error=str(exc)[:2000])
        logger.warning("Models of %s not refreshed, keeping the last list: %s", server.alias, exc)
        return RefreshResult(error=str(exc))
    finally:
        client.close()
    with transaction.atomic():
        # The lock is the one server_delete takes: a delete comes wholly before (the row is
        # gone here) or after this replacement, never between its inserts and its commit.
        if Server.objects.select_for_update().filter(pk=server.pk).first() is None:
            logger.info("Server %s was deleted while its models were read", server.alias)
            return RefreshResult(error="The server was deleted.", gone=True)
        existing = {(m.kind, m.relative_path): m for m in server.cached_models.all()}
        seen = set()
        added = updated = 0
        for row in listed:
            key = (row.kind, row.relative_path)
            if key in seen:
                continue
            seen.add(key)
            current = existing.get(key)
            if current is None:
                CachedModel.objects.create(server=server, **row.fields())
                added += 1
            elif any(getattr(current, name) != value for name, value in row.fields().items()):
                for name, value in row.fields().items():
                    setattr(current, name, value)
                current.save()
                updated += 1
        gone = [m.pk for key, m in existing.items() if key not in seen and key[0] in replaced]
        CachedModel.objects.filter(pk__in=gone).delete()
        Server.objects.filter(pk=server.pk).update(
            models_refreshed_at=timezone.now(),
            models_stale=False,
            models_error="",
            listed_kinds=sorted(extensions.listed),
        )
    result = RefreshResult(
        checkpoints=sum(1 for row in listed if row.kind == ModelKind.CHECKPOINT),
        loras=sum(1 for row in listed if row.kind == ModelKind.LORA),
        added=added,
        removed=len(gone),
        updated=updated,
    )
    logger.info("Models of %s refreshed: %s", server.alias, result)
    return result
