"""Whether a server has what a job's extras name (queue_app.extension_params): its VAE,
modules, styles, hires upscaler, scripts and ControlNet models, from the server's cached
lists (servers_app.extension_cache).

At submit (`extensions_missing`, called by queue_app.services.job_models_check for each
fresh server) a name a listed kind lacks is refused with its own code (`script_not_found`,
...). At dispatch (`extensions_resolve`) the names are mapped to the server's own, and a
missing one fails the job after one refresh, rather than let the server refuse it (an
unknown script is a 422) or silently ignore it (an unknown VAE or style is dropped).
A kind the server does not list (`Server.listed_kinds`) is never checked: the name is sent
as written.
"""

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from integrations.forge.client import ForgePermanentError, ForgeTransientError
from queue_app.extension_params import (
    ADETAILER_SCRIPT,
    CONTROLNET_SCRIPT,
    Extras,
    ResolvedExtras,
    requested_extras,
)
from servers_app.extension_cache import EXTENSION_KINDS, find_listed, requirement_key
from servers_app.models import CachedModel, ModelKind, Server

__all__ = [
    "ExtensionUnavailable",
    "Missing",
    "extensions_missing",
    "extensions_resolve",
    "job_requirement_keys",
]

# The code of each kind's refusal, registered in core_app.error_codes.
_CODES: dict[str, str] = {
    ModelKind.VAE: "vae_not_found",
    ModelKind.MODULE: "module_not_found",
    ModelKind.STYLE: "style_not_found",
    ModelKind.UPSCALER: "upscaler_not_found",
    ModelKind.SCRIPT: "script_not_found",
    ModelKind.CONTROLNET_MODEL: "controlnet_model_not_found",
}
_WHAT: dict[str, str] = {
    ModelKind.VAE: "VAE",
    ModelKind.MODULE: "module",
    ModelKind.STYLE: "style",
    ModelKind.UPSCALER: "upscaler",
    ModelKind.SCRIPT: "script",
    ModelKind.CONTROLNET_MODEL: "ControlNet model",
}


def job_requirement_keys(params: dict[str, object]) -> list[str]:
    """The job's needs as CachedModel.requirement_key spells them (Job.requirement_keys):
    what an "any" job's server must list."""
    extras = requested_extras(params)
    keys = [requirement_key(ModelKind.VAE, name) for name in (extras.vae, *extras.text_encoders)]
    keys += [requirement_key(ModelKind.STYLE, name) for name in extras.styles]
    if extras.hr_upscaler:
        keys.append(requirement_key(ModelKind.UPSCALER, extras.hr_upscaler))
    keys += [requirement_key(ModelKind.SCRIPT, name, mode=extras.mode) for name in extras.scripts]
    keys += [requirement_key(ModelKind.CONTROLNET_MODEL, name) for name in extras.controlnet_models]
    return sorted({key for key in keys if key})


@dataclass(frozen=True)
class Missing:
    """One thing the server lacks: the field that names it, a message, the code."""

    field: str
    message: str
    code: str


def _rows(server: Server) -> dict[str, list[CachedModel]]:
    by_kind: dict[str, list[CachedModel]] = {kind: [] for kind in EXTENSION_KINDS}
    for row in CachedModel.objects.filter(server=server, kind__in=EXTENSION_KINDS):
        by_kind[row.kind].append(row)
    return by_kind


def _is_forge(server: Server) -> bool:
    return server.flavour == "forge" or (
        not server.flavour and ModelKind.MODULE in (server.listed_kinds or [])
    )


def _not_found(kind: str, name: str, rows: Sequence[CachedModel], server: Server) -> str:
    titles = list(dict.fromkeys(row.title for row in rows))  # a script has a row a mode
    close = difflib.get_close_matches(name, titles, n=3, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    if not close and titles and len(titles) <= 12:
        hint = f" It has: {', '.join(sorted(titles, key=str.casefold))}."
    elif not titles:
        hint = f" It has no {_WHAT[kind]}s."
    return f"Server '{server.alias}' has no {_WHAT[kind]} '{name}'.{hint}"


@dataclass
class _Found:
    missing: list[Missing] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


def _check(server: Server, extras: Extras) -> _Found:
    """What of `extras` the server's listed kinds lack, and the server's names of the rest."""
    found = _Found()
    if not extras:
        return found
    listed = set(server.listed_kinds or [])
    rows = _rows(server)
    forge = _is_forge(server)

    def look(kind: str, name: str, field_name: str, *, rows_of: Sequence[str] = ()) -> None:
        kinds = rows_of or (kind,)
        if not any(k in listed for k in kinds):
            return
        candidates = [row for k in kinds for row in rows[k]]
        row = find_listed(kind, name, candidates)
        if row is None:
            found.missing.append(
                Missing(field_name, _not_found(kind, name, candidates, server), _CODES[kind])
            )
        elif kind in (ModelKind.VAE, ModelKind.MODULE):
            found.files[name] = (row.filename or row.title) if forge else row.title
        else:
            found.names[name] = row.title

    file_kinds = (ModelKind.MODULE,) if forge else (ModelKind.VAE,)
    if extras.vae:
        look(ModelKind.VAE, extras.vae, "vae", rows_of=file_kinds)
    if extras.text_encoders and not forge and server.flavour == "a1111":
        found.missing.append(
            Missing(
                "text_encoders",
                f"Server '{server.alias}' is AUTOMATIC1111, which has no text-encoder modules "
                "(they are Forge's).",
                _CODES[ModelKind.MODULE],
            )
        )
    for name in extras.text_encoders if forge else ():
        look(ModelKind.MODULE, name, "text_encoders", rows_of=(ModelKind.MODULE,))
    for name in extras.styles:
        look(ModelKind.STYLE, name, "styles")
    if extras.hr_upscaler:
        look(ModelKind.UPSCALER, extras.hr_upscaler, "hr_upscaler")
    _check_scripts(server, extras, found, listed, rows[ModelKind.SCRIPT])
    for name in extras.controlnet_models:
        look(ModelKind.CONTROLNET_MODEL, name, "alwayson_scripts")
    return found


def _check_scripts(
    server: Server,
    extras: Extras,
    found: _Found,
    listed: set[str],
    rows: Sequence[CachedModel],
) -> None:
    if ModelKind.SCRIPT not in listed:
        return
    mode = extras.mode
    wanted = [("script_name", extras.script_name, False)] if extras.script_name else []
    wanted += [("alwayson_scripts", name, True) for name in extras.alwayson]
    for field_name, name, alwayson in wanted:
        row = find_listed(ModelKind.SCRIPT, name, rows)
        modes = (row.metadata or {}).get("modes", []) if row is not None else []
        if row is None or (modes and mode not in modes):
            message = _not_found(ModelKind.SCRIPT, name, rows, server)
            if row is not None:
                only = ", ".join(modes)
                message = f"Server '{server.alias}' has the script '{name}' for {only} only."
            elif name.casefold() in (CONTROLNET_SCRIPT, ADETAILER_SCRIPT):
                message += " Is the extension installed and enabled?"
            found.missing.append(Missing(field_name, message, "script_not_found"))
            continue
        is_alwayson = (row.metadata or {}).get("alwayson")
        if is_alwayson is not None and is_alwayson != alwayson:
            where = "alwayson_scripts" if is_alwayson else "script_name"
            found.missing.append(
                Missing(
                    field_name,
                    f"'{name}' is {'an always-on' if is_alwayson else 'a selectable'} script "
                    f"of server '{server.alias}': name it in {where}.",
                    "script_kind_mismatch",
                )
            )


def extensions_missing(server: Server, params: dict[str, object]) -> list[Missing]:
    """What the job's extras name that the server's cache (its listed kinds) lacks."""
    return _check(server, requested_extras(params)).missing


class ExtensionUnavailable(ForgePermanentError):
    """Something the job names is not on its server: it fails with `missing_code`
    (`script_not_found`, ...), naming the `field`."""

    def __init__(self, missing: Missing) -> None:
        super().__init__(missing.message)
        self.missing_code = missing.code
        self.field = missing.field


def extensions_resolve(server: Server, params: dict[str, object]) -> ResolvedExtras:
    """The server's names of the job's extras; one refresh of the lists when something is
    missing, then ExtensionUnavailable for the first thing still missing."""
    from servers_app.services import server_refresh_models

    extras = requested_extras(params)
    found = _check(server, extras)
    if found.missing:
        refreshed = server_refresh_models(server=server)
        if refreshed.error:
            raise ForgeTransientError(f"Could not list the server's models: {refreshed.error}")
        server.refresh_from_db(fields=["listed_kinds", "flavour"])
        found = _check(server, extras)
        if found.missing:
            raise ExtensionUnavailable(found.missing[0])
    return ResolvedExtras(forge=_is_forge(server), files=found.files, names=found.names)
