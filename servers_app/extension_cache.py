"""A server's other lists, beside its checkpoints and LoRAs: VAEs, modules, upscalers,
prompt styles, scripts and ControlNet models, as cache rows (CachedModel, one kind each).

Each list is read from its own endpoint; one the server does not have (a 404: A1111 has no
`/sdapi/v1/sd-modules`, Forge no `/sdapi/v1/sd-vae`, a server without the ControlNet
extension no `/controlnet/model_list`) or that could not be read is left out of
`ExtensionLists.listed`, and what the cache held of it is kept but not trusted
(`Server.listed_kinds`): nothing is refused at submit against a list MobileSD does not have.

Names are compared as the servers compare them: scripts by their lower-cased title
(A1111's `script_name_to_index`), styles and upscalers by name, VAEs and modules by file
name (Forge's `modules_change` takes a path or a bare file name and keeps its base name).
`requirement_key` is the one spelling an "any" job's requirement and a cache row share, so
that the claim can match them in SQL (a script has a row, and a key, per mode).
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from servers_app.checkpoints import file_stem, strip_hash
from servers_app.model_cache import ModelRow
from servers_app.models import ModelKind

logger = logging.getLogger(__name__)

# The kinds of this module, each a list of its own.
EXTENSION_KINDS: tuple[str, ...] = (
    ModelKind.VAE,
    ModelKind.MODULE,
    ModelKind.UPSCALER,
    ModelKind.STYLE,
    ModelKind.SCRIPT,
    ModelKind.CONTROLNET_MODEL,
)
# What a requirement of each kind is matched against: a VAE may be one of Forge's modules.
FILE_KINDS: tuple[str, ...] = (ModelKind.VAE, ModelKind.MODULE)

CONTROLNET_SCRIPT = "controlnet"
ADETAILER_SCRIPT = "adetailer"
# The values a ControlNet unit's `model` may have that name no file.
CONTROLNET_NO_MODEL = frozenset({"", "none"})


# A script is listed, and needed, per mode (`/sdapi/v1/scripts` has one list for each).
SCRIPT_MODES: tuple[str, ...] = ("txt2img", "img2img")


def requirement_key(kind: str, name: str, *, mode: str = "txt2img") -> str:
    """The comparable key of a thing a job needs, as CachedModel.requirement_key stores it
    ("" for checkpoints and LoRAs, which have keys of their own). A script's names its
    mode (`script:img2img:<name>`): a server with the script for the other mode only does
    not have it."""
    text = name.strip()
    if not text:
        return ""
    if kind in FILE_KINDS:
        return f"file:{file_stem(text).casefold()}"
    if kind == ModelKind.CONTROLNET_MODEL:
        return f"controlnet:{file_stem(strip_hash(text)).casefold()}"
    if kind == ModelKind.SCRIPT:
        return f"{kind}:{mode}:{text.casefold()}"
    if kind in (ModelKind.STYLE, ModelKind.UPSCALER):
        return f"{kind}:{text.casefold()}"
    return ""


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _row(kind: str, title: str, *, name: str = "", **extra: Any) -> ModelRow:
    return ModelRow(
        kind=kind,
        title=title,
        name=name or title,
        relative_path=title,
        requirement_key=requirement_key(kind, title),
        **extra,
    )


def file_rows(kind: str, listing: Iterable[dict[str, Any]]) -> list[ModelRow]:
    """Rows of `/sdapi/v1/sd-vae` (kind vae) or Forge's `/sdapi/v1/sd-modules` (kind
    module): `[{"model_name", "filename"}]`; the folder a module lies in (VAE,
    text_encoder) is kept in its metadata."""
    rows = []
    for item in listing:
        model_name = _text(item.get("model_name"))
        if not model_name:
            continue
        filename = _text(item.get("filename"))
        parts = filename.replace("\\", "/").rsplit("/", 2)
        folder = parts[-2] if len(parts) > 1 else ""
        rows.append(
            _row(
                kind,
                model_name,
                name=file_stem(model_name),
                model_name=model_name,
                filename=filename,
                metadata={"folder": folder} if folder else {},
            )
        )
    return rows


def upscaler_rows(
    upscalers: Iterable[dict[str, Any]], latent_modes: Iterable[dict[str, Any]]
) -> list[ModelRow]:
    """Rows of `/sdapi/v1/upscalers` and `/sdapi/v1/latent-upscale-modes`: both are valid
    `hr_upscaler` values."""
    rows = []
    for item in latent_modes:
        name = _text(item.get("name"))
        if name:
            rows.append(_row(ModelKind.UPSCALER, name, metadata={"latent": True}))
    for item in upscalers:
        name = _text(item.get("name"))
        if not name:
            continue
        scale = item.get("scale")
        rows.append(
            _row(
                ModelKind.UPSCALER,
                name,
                model_name=_text(item.get("model_name")),
                filename=_text(item.get("model_path")),
                metadata={"latent": False, "scale": scale}
                if isinstance(scale, int | float)
                else {"latent": False},
            )
        )
    return rows


def style_rows(listing: Iterable[dict[str, Any]]) -> list[ModelRow]:
    """Rows of `/sdapi/v1/prompt-styles`: `[{"name", "prompt", "negative_prompt"}]`."""
    rows = []
    for item in listing:
        name = _text(item.get("name"))
        if name:
            metadata = {
                "prompt": item.get("prompt") if isinstance(item.get("prompt"), str) else "",
                "negative_prompt": item.get("negative_prompt")
                if isinstance(item.get("negative_prompt"), str)
                else "",
            }
            rows.append(_row(ModelKind.STYLE, name, metadata=metadata))
    return rows


def script_rows(scripts: dict[str, Any], infos: Iterable[dict[str, Any]]) -> list[ModelRow]:
    """Rows of `/sdapi/v1/scripts` (`{"txt2img": [names], "img2img": [names]}`, lower-case
    titles) with what `/sdapi/v1/script-info` says of each (`is_alwayson`, its `args` per
    mode); one row per script and mode (its `requirement_key` names the mode, which an
    "any" job's key matches), each with all its modes in the metadata. A script of no
    listed mode (known from script-info alone) is taken for both."""
    found: dict[str, dict[str, Any]] = {}
    for mode in ("txt2img", "img2img"):
        names = scripts.get(mode)
        for raw in names if isinstance(names, list) else []:
            name = _text(raw)
            if name:
                entry = found.setdefault(name.casefold(), {"name": name, "modes": []})
                if mode not in entry["modes"]:
                    entry["modes"].append(mode)
    for info in infos:
        name = _text(info.get("name"))
        if not name:
            continue
        entry = found.setdefault(name.casefold(), {"name": name, "modes": []})
        mode = "img2img" if info.get("is_img2img") else "txt2img"
        if isinstance(info.get("is_alwayson"), bool):
            entry["alwayson"] = info["is_alwayson"]
        args = info.get("args")
        if isinstance(args, list):
            entry.setdefault("args", {})[mode] = [
                {key: arg.get(key) for key in ("label", "value", "minimum", "maximum", "choices")}
                for arg in args
                if isinstance(arg, dict)
            ]
    rows = []
    for entry in found.values():
        metadata = {key: value for key, value in entry.items() if key != "name"}
        metadata.setdefault("alwayson", None)
        title = entry["name"]
        for mode in entry["modes"] or SCRIPT_MODES:
            rows.append(
                ModelRow(
                    kind=ModelKind.SCRIPT,
                    title=title,
                    name=f"{title} ({mode})",
                    relative_path=f"{mode}:{title}",
                    metadata=metadata,
                    requirement_key=requirement_key(ModelKind.SCRIPT, title, mode=mode),
                )
            )
    return rows


def controlnet_rows(listing: Any) -> list[ModelRow]:
    """Rows of the ControlNet extension's `/controlnet/model_list`: `{"model_list": [names
    such as "control_v11p_sd15_canny [d14c016b]"]}`."""
    names = listing.get("model_list") if isinstance(listing, dict) else None
    rows = []
    for raw in names if isinstance(names, list) else []:
        name = _text(raw)
        if name and name.casefold() not in CONTROLNET_NO_MODEL:
            rows.append(_row(ModelKind.CONTROLNET_MODEL, name, name=strip_hash(name)))
    return rows


class ListingClient(Protocol):
    """What reading the lists needs of integrations.forge.client.ForgeClient."""

    def sd_vae(self) -> list[dict[str, Any]]: ...
    def sd_modules(self) -> list[dict[str, Any]]: ...
    def upscalers(self) -> list[dict[str, Any]]: ...
    def latent_upscale_modes(self) -> list[dict[str, Any]]: ...
    def prompt_styles(self) -> list[dict[str, Any]]: ...
    def scripts(self) -> dict[str, Any]: ...
    def script_info(self) -> list[dict[str, Any]]: ...
    def controlnet_model_list(self) -> dict[str, Any]: ...


@dataclass
class ExtensionLists:
    """The rows read, and the kinds whose lists were read whole (`listed`)."""

    rows: list[ModelRow] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)


def extension_lists_read(client: ListingClient, *, flavour: str = "") -> ExtensionLists:
    """Read every extension list the server has. A list that fails (its endpoint is absent,
    or it answers an error) is left out of `listed`, never guessed; it does not fail the
    others (checkpoints and LoRAs are what decides whether a server's cache is stale)."""
    from integrations.forge.client import ForgeError

    lists = ExtensionLists()

    def read(kind: str, build: Callable[[], Sequence[ModelRow]]) -> bool:
        try:
            rows = list(build())
        except ForgeError as exc:
            logger.info("No %s list from the server: %s", kind, exc)
            return False
        lists.rows.extend(rows)
        if kind not in lists.listed:
            lists.listed.append(kind)
        return True

    if flavour != "forge":
        read(ModelKind.VAE, lambda: file_rows(ModelKind.VAE, client.sd_vae()))
    if flavour != "a1111":
        read(ModelKind.MODULE, lambda: file_rows(ModelKind.MODULE, client.sd_modules()))
    read(
        ModelKind.UPSCALER,
        lambda: upscaler_rows(client.upscalers(), client.latent_upscale_modes()),
    )
    read(ModelKind.STYLE, lambda: style_rows(client.prompt_styles()))
    read(ModelKind.SCRIPT, lambda: script_rows(client.scripts(), client.script_info()))
    has_controlnet = any(
        row.kind == ModelKind.SCRIPT and row.title.casefold() == CONTROLNET_SCRIPT
        for row in lists.rows
    )
    if has_controlnet:
        read(ModelKind.CONTROLNET_MODEL, lambda: controlnet_rows(client.controlnet_model_list()))
    return lists


# --- matching a requested name against a server's rows ------------------------------------


class NamedLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def requirement_key(self) -> str: ...


def find_listed[T: NamedLike](kind: str, requested: str, rows: Sequence[T]) -> T | None:
    """The row of `rows` that `requested` names on the server, or None: scripts, styles
    and upscalers by name (any case), VAEs and modules by exact file name, then by file
    name without extension, ControlNet models by name with or without their ` [hash]`."""
    text = requested.strip()
    if kind in FILE_KINDS:
        wanted = text.replace("\\", "/").rsplit("/", 1)[-1].casefold()
        for row in rows:
            if row.title.casefold() == wanted or (row.model_name or "").casefold() == wanted:
                return row
    if kind in (ModelKind.CONTROLNET_MODEL, ModelKind.SCRIPT):
        # A script's rows (one a mode) share its title and metadata: the first one will do.
        for row in rows:
            if row.title.casefold() == text.casefold():
                return row
        if kind == ModelKind.SCRIPT:
            return None
    key = requirement_key(kind, text)
    return next((row for row in rows if row.requirement_key == key), None)
