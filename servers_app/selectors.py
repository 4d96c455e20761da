"""Reads of servers and their model cache."""

from typing import Any

from django.db.models import Min, Q, QuerySet

from core_app.errors import NotFound
from servers_app.checkpoints import file_stem
from servers_app.models import CachedModel, ModelKind, Server


def server_not_found(alias: str) -> NotFound:
    """The one answer for an alias no server has (404 `server_not_found`)."""
    return NotFound(f"Server '{alias}' not found.", code="server_not_found")


def server_get(*, alias: str, queryset: QuerySet[Server] | None = None) -> Server:
    """The server with this alias, or `server_not_found`. Pass `queryset` to read it
    another way (`Server.objects.select_for_update()` inside a transaction)."""
    server = (queryset if queryset is not None else Server.objects.all()).filter(alias=alias)
    found = server.first()
    if found is None:
        raise server_not_found(alias)
    return found


def server_require(*, alias: str) -> None:
    """Refuse an alias no server has, without reading the row."""
    if not Server.objects.filter(alias=alias).exists():
        raise server_not_found(alias)


def server_checkpoints(*, server: Server) -> list[CachedModel]:
    return list(CachedModel.objects.filter(server=server, kind=ModelKind.CHECKPOINT))


def server_loras(*, server: Server) -> list[CachedModel]:
    return list(CachedModel.objects.filter(server=server, kind=ModelKind.LORA))


def servers_with_model(
    *,
    kind: str,
    sha256: str = "",
    short_hash: str = "",
    name: str = "",
) -> list[str]:
    """Aliases of the servers that have this model: by hash first (SHA-256, or a 10-12 hex
    short hash / AutoV2 / AutoV3 prefix of it), then, when no hash matches, by file name
    (stem, any case)."""
    models: QuerySet[CachedModel] = CachedModel.objects.filter(kind=kind)
    by_hash = _with_hash(sha256=sha256, short_hash=short_hash)
    found = models.filter(by_hash) if by_hash else models.none()
    if not found.exists() and name:
        found = models.filter(_with_stem(name))
    return sorted(set(found.values_list("server__alias", flat=True)))


def _with_hash(*, sha256: str = "", short_hash: str = "") -> Q:
    """Models with this SHA-256, or whose short hash (or SHA-256 prefix) is `short_hash`;
    an empty Q when neither is given."""
    by_hash = Q()
    if sha256:
        by_hash |= Q(sha256__iexact=sha256)
    if short_hash:
        value = short_hash.lower()
        by_hash |= Q(short_hash__iexact=value) | Q(sha256__istartswith=value)
    return by_hash


def _with_stem(name: str) -> Q:
    """Models whose file name, without folder and extension, is `name`'s (any case)."""
    return Q(stem_key=file_stem(name).casefold())


def model_kind_for_civitai(civitai_type: str) -> str | None:
    """Which cached kind a Civitai model type is (None for types we do not cache)."""
    return {
        "checkpoint": ModelKind.CHECKPOINT,
        "lora": ModelKind.LORA,
        "locon": ModelKind.LORA,
        "dora": ModelKind.LORA,
    }.get(civitai_type.strip().lower())


def model_groups(
    *, kind: str, server_alias: str = "", search: str = ""
) -> tuple[QuerySet[CachedModel], QuerySet[Any, Any]]:
    """The cached models of a kind, filtered, and their distinct identities (the same file
    on several servers is one entry), ordered by name.

    Returns (matching rows, identities); page the identities, then fetch the page's rows
    with `model_group_rows`. Both are indexed queries, fast at tens of thousands of rows.
    """
    rows = CachedModel.objects.filter(kind=kind)
    if server_alias:
        rows = rows.filter(server__alias=server_alias)
    if search:
        rows = rows.filter(
            Q(name__icontains=search)
            | Q(relative_path__icontains=search)
            | Q(alias__icontains=search)
            | Q(sha256__istartswith=search)
        )
    identities = (
        rows.values("identity").annotate(sort_name=Min("name")).order_by("sort_name", "identity")
    )
    return rows, identities


def model_group_rows(
    rows: QuerySet[CachedModel], identities: list[str]
) -> dict[str, list[CachedModel]]:
    """The rows of these identities, grouped, servers in alias order."""
    grouped: dict[str, list[CachedModel]] = {identity: [] for identity in identities}
    for model in (
        rows.filter(identity__in=identities).select_related("server").order_by("server__alias")
    ):
        grouped[model.identity].append(model)
    return grouped


def server_separator(*, server: Server) -> str:
    """The server's path separator, as its listings show it (`/` until known)."""
    sample = (
        CachedModel.objects.filter(server=server)
        .exclude(filename="")
        .values_list("filename", flat=True)
        .first()
    )
    return "\\" if sample and "\\" in sample else "/"


def server_checkpoint_reported(
    *, server: Server, reported_hash: object, reported_name: object
) -> CachedModel | None:
    """The cached checkpoint of `server` that a generation's info names (`sd_model_hash`,
    `sd_model_name`), or None: by hash when the info has one, else by file stem when only
    one checkpoint has it."""
    digest = reported_hash.strip().lower() if isinstance(reported_hash, str) else ""
    rows = CachedModel.objects.filter(server=server, kind=ModelKind.CHECKPOINT)
    if len(digest) >= 8:
        found = list(rows.filter(_with_hash(short_hash=digest))[:2])
        if len(found) == 1:
            return found[0]
    name = reported_name.strip() if isinstance(reported_name, str) else ""
    if not name:
        return None
    found = list(rows.filter(_with_stem(name))[:2])
    return found[0] if len(found) == 1 else None


def server_lists(*, server: Server) -> dict[str, Any]:
    """The server's extension lists (servers_app.extension_cache) as the API shows them,
    one query."""
    by_kind: dict[str, list[CachedModel]] = {}
    rows = CachedModel.objects.filter(server=server).exclude(
        kind__in=[ModelKind.CHECKPOINT, ModelKind.LORA]
    )
    titles: set[tuple[str, str]] = set()
    for row in rows.order_by("kind", "title", "relative_path"):
        if (row.kind, row.title) not in titles:  # a script is one row per mode: shown once
            titles.add((row.kind, row.title))
            by_kind.setdefault(row.kind, []).append(row)
    return {
        "server": server.alias,
        "refreshed_at": server.models_refreshed_at,
        "stale": server.models_stale,
        "listed": list(server.listed_kinds or []),
        "vaes": by_kind.get(ModelKind.VAE, []),
        "modules": by_kind.get(ModelKind.MODULE, []),
        "upscalers": by_kind.get(ModelKind.UPSCALER, []),
        "styles": by_kind.get(ModelKind.STYLE, []),
        "scripts": by_kind.get(ModelKind.SCRIPT, []),
        "controlnet_models": by_kind.get(ModelKind.CONTROLNET_MODEL, []),
    }
