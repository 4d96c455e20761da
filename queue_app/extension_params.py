"""`generation_params` beyond the basic txt2img fields: the VAE, Forge's text-encoder
modules, prompt styles, the hires-fix fields, and the servers' scripts (`alwayson_scripts`
with ControlNet and ADetailer units, `script_name` / `script_args`).

Pure functions, no Django, no I/O (as queue_app.params): `requested_extras` reads what a
job asks for, `apply_extras` adds it to a request body built by queue_app.params with the
names the server knows (`ResolvedExtras`, resolved by queue_app.extension_checks).

Mapping, as the real servers take it:

* ``vae``: A1111 `override_settings.sd_vae` (a file name of `/sdapi/v1/sd-vae`, or
  "Automatic" / "None"); Forge `override_settings.forge_additional_modules`, the list of
  module paths of `/sdapi/v1/sd-modules` (Forge's `modules_change` keeps them by base name;
  sending the paths it stores makes an unchanged choice a no-op, not a model reload).
  A job naming no VAE (nor text encoders) leaves the server's own setting alone, unless
  MobileSD changed it: MobileSD's overrides stay on the server
  (`override_settings_restore_afterwards: false`), so such a job then sends the server's
  own value, the `baseline` read from its options before the first change (the
  `sd_vae` of a server of unknown flavour: A1111 fails on Forge's option).
* ``text_encoders``: Forge only, added to the same `forge_additional_modules`.
* ``styles``: `styles`, the names of `/sdapi/v1/prompt-styles`.
* hires fix (with ``enable_hires_fix``): ``hr_scale``, ``hr_upscaler``,
  ``hr_second_pass_steps``, ``hr_resize_x`` / ``hr_resize_y``, ``hr_sampler_name``,
  ``hr_scheduler``, ``hr_prompt``, ``hr_negative_prompt`` and (Forge) ``hr_cfg`` and
  ``hr_distilled_cfg`` go as named; ``hr_denoising_strength`` is the request's
  `denoising_strength` (a txt2img's hires pass is what that field denoises). They win over
  the older ``hires_scale``, ``hires_steps`` and ``upscaler_model``. Forge's hires pass
  also gets ``hr_additional_modules: ["Use same choices"]`` (without it Forge's API fails
  the request) and ``hr_cfg`` = ``cfg_scale`` (its default, 1, ignores the negative prompt).
* ``alwayson_scripts`` (`{"<title>": {"args": [...]}}`) and ``script_name`` /
  ``script_args`` go as sent, except for image references inside the units, which
  `resolve_script_images` hands to a resolver (uploads; strings it does not know pass
  through unchanged).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ADETAILER_SCRIPT",
    "CONTROLNET_SCRIPT",
    "HIRES_FIELDS",
    "Extras",
    "ResolvedExtras",
    "apply_extras",
    "controlnet_models",
    "requested_extras",
    "resolve_script_images",
    "sends_modules",
    "vae_setting",
]

CONTROLNET_SCRIPT: Final = "controlnet"
ADETAILER_SCRIPT: Final = "adetailer"

# VAE choices that name no file: A1111's own options.
VAE_CHOICES: Final = frozenset({"automatic", "none"})
# The server options a job's VAE choice sets.
SD_VAE: Final = "sd_vae"
FORGE_MODULES: Final = "forge_additional_modules"
# An upscaler or ControlNet model choice meaning "none".
_NONE: Final = frozenset({"", "none", "null"})

# Hires-fix fields sent under their own name when the hires fix is on.
HIRES_FIELDS: Final = (
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_cfg",
    "hr_distilled_cfg",
)
# Forge's hires-pass fields (A1111 1.10 has neither): dropped for a server known not to be.
_FORGE_ONLY_HIRES: Final = ("hr_cfg", "hr_distilled_cfg")
_SAME_MODULES: Final = "Use same choices"
_DEFAULT_CFG: Final = 7.0

# Keys of a ControlNet unit (or an ADetailer one) that hold an image: what
# `resolve_script_images` hands to the resolver.
IMAGE_KEYS: Final = frozenset({"image", "input_image", "mask", "mask_image", "ad_mask"})


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _names(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return list(dict.fromkeys(name for name in map(_text, value) if name))


@dataclass(frozen=True)
class Extras:
    """What a job asks of its server beyond its checkpoint and LoRAs, as written."""

    mode: str = "txt2img"
    vae: str = ""
    text_encoders: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    hr_upscaler: str = ""
    script_name: str = ""
    alwayson: tuple[str, ...] = ()
    controlnet_models: tuple[str, ...] = ()

    @property
    def scripts(self) -> tuple[str, ...]:
        return ((self.script_name,) if self.script_name else ()) + self.alwayson

    def __bool__(self) -> bool:
        return bool(
            self.vae
            or self.text_encoders
            or self.styles
            or self.hr_upscaler
            or self.script_name
            or self.alwayson
        )


def _script_args(scripts: Mapping[str, Any], title: str) -> list[Any]:
    """The `args` of an always-on script, its title compared in any case (as servers do)."""
    for name, value in scripts.items():
        if isinstance(name, str) and name.strip().casefold() == title:
            args = value.get("args") if isinstance(value, Mapping) else None
            return list(args) if isinstance(args, list) else []
    return []


def controlnet_models(params: Mapping[str, Any]) -> list[str]:
    """The ControlNet models the job's enabled units name ("None" left out)."""
    scripts = params.get("alwayson_scripts")
    if not isinstance(scripts, Mapping):
        return []
    models = []
    for unit in _script_args(scripts, CONTROLNET_SCRIPT):
        if isinstance(unit, Mapping) and unit.get("enabled", True) is not False:
            model = _text(unit.get("model"))
            if model.casefold() not in _NONE:
                models.append(model)
    return list(dict.fromkeys(models))


def requested_extras(params: Mapping[str, Any]) -> Extras:
    """What `params` asks for: the VAE unless "Automatic"/"None", the text encoders, the
    styles, the hires upscaler when the hires fix is on (`hr_upscaler`, else
    `upscaler_model`; "None" and empty left out), the selectable script and the always-on
    ones (titles as sent), the ControlNet units' models."""
    vae = _text(params.get("vae"))
    hr_upscaler = ""
    if params.get("enable_hires_fix") is True:
        hr_upscaler = _text(params.get("hr_upscaler")) or _text(params.get("upscaler_model"))
        if hr_upscaler.casefold() in _NONE:
            hr_upscaler = ""
    scripts = params.get("alwayson_scripts")
    alwayson = (
        tuple(dict.fromkeys(_text(name) for name in scripts if _text(name)))
        if isinstance(scripts, Mapping)
        else ()
    )
    mode = _text(params.get("mode")) or "txt2img"
    return Extras(
        mode="img2img" if mode in ("img2img", "inpaint") else "txt2img",
        vae="" if vae.casefold() in VAE_CHOICES else vae,
        text_encoders=tuple(_names(params.get("text_encoders"))),
        styles=tuple(_names(params.get("styles"))),
        hr_upscaler=hr_upscaler,
        script_name=_text(params.get("script_name")),
        alwayson=alwayson,
        controlnet_models=tuple(controlnet_models(params)),
    )


@dataclass(frozen=True)
class ResolvedExtras:
    """The server's names of what a job asks for (each requested name to the server's):
    VAE and modules to what the request carries (A1111: the VAE's file name; Forge: each
    module's path), styles and the hires upscaler to the server's spelling. A name missing
    here is sent as written. `forge`: send the VAE as Forge's modules."""

    forge: bool = False
    files: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)


ImageResolver = Callable[[str], str]


def _keep(value: str) -> str:
    return value


def resolve_script_images(scripts: Any, resolve: ImageResolver = _keep) -> Any:
    """`alwayson_scripts` with every image value of its units (`image`, `input_image`,
    `mask`, ... in a unit, or `{"image", "mask"}` objects there) passed through `resolve`,
    which turns an upload reference into what the server takes (base64) and returns any
    other string unchanged. The hook of the uploads (issue 16 point 1): without a resolver
    everything goes as sent. Returns a new structure; the job's stays as stored."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, str):
            return resolve(value) if key in IMAGE_KEYS else value
        if isinstance(value, Mapping):
            return {k: walk(v, k if isinstance(k, str) else "") for k, v in value.items()}
        if isinstance(value, list):
            # A list under an image key is a list of images (or of {"image", "mask"}).
            return [walk(item, key) for item in value]
        return value

    if not isinstance(scripts, Mapping):
        return scripts
    return {name: walk(value) for name, value in scripts.items()}


def sends_modules(resolved: ResolvedExtras | None, flavour: str | None) -> bool:
    """Whether the VAE goes as Forge's modules (else as A1111's `sd_vae`)."""
    return bool(resolved and resolved.forge) or (flavour or "").strip().lower() == "forge"


def vae_setting(params: Mapping[str, Any], *, forge: bool) -> str | None:
    """The server option the job's VAE choice sets (`forge_additional_modules` for Forge's
    VAE or text encoders, `sd_vae` for A1111's VAE, "Automatic" and "None" included), None
    when it names none: the server's own setting is then the job's."""
    if forge:
        return (
            FORGE_MODULES
            if _text(params.get("vae")) or _names(params.get("text_encoders"))
            else None
        )
    return SD_VAE if _text(params.get("vae")) else None


def apply_extras(
    payload: dict[str, Any],
    params: Mapping[str, Any],
    *,
    resolved: ResolvedExtras | None = None,
    flavour: str | None = None,
    images: ImageResolver = _keep,
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Add the job's extras to `payload` (a queue_app.params request body) in place and
    return it. `baseline`: the server's own values of the VAE settings MobileSD changed
    (servers_app's `Server.vae_baseline`), sent when the job names no VAE. Building never
    raises: malformed values were refused at submit."""
    resolved = resolved or ResolvedExtras()
    extras = requested_extras(params)
    overrides: dict[str, Any] = payload.setdefault("override_settings", {})
    is_forge = sends_modules(resolved, flavour)

    setting = vae_setting(params, forge=is_forge)
    if setting == FORGE_MODULES:
        # "Automatic" / "None" name no module: the checkpoint's own VAE.
        modules = [resolved.files.get(name, name) for name in (extras.vae, *extras.text_encoders)]
        overrides[FORGE_MODULES] = [name for name in modules if name]
    elif setting == SD_VAE and extras.vae:
        overrides[SD_VAE] = resolved.files.get(extras.vae, extras.vae)
    elif setting == SD_VAE:
        overrides[SD_VAE] = "None" if _text(params.get("vae")).casefold() == "none" else "Automatic"
    else:
        # MobileSD's overrides stay on the server (`override_settings_restore_afterwards:
        # false`): the setting a previous job changed goes back to the server's own.
        own = FORGE_MODULES if is_forge else SD_VAE
        if baseline and own in baseline:
            overrides[own] = baseline[own]

    if extras.styles:
        payload["styles"] = [resolved.names.get(name, name) for name in extras.styles]

    if payload.get("enable_hr"):
        maybe_forge = is_forge or not (flavour or "").strip()
        _apply_hires(payload, params, resolved=resolved, forge=maybe_forge)

    scripts = params.get("alwayson_scripts")
    if isinstance(scripts, Mapping) and scripts:
        payload["alwayson_scripts"] = resolve_script_images(scripts, images)
    if extras.script_name:
        payload["script_name"] = extras.script_name
        args = params.get("script_args")
        payload["script_args"] = list(args) if isinstance(args, list) else []
    return payload


def _apply_hires(
    payload: dict[str, Any],
    params: Mapping[str, Any],
    *,
    resolved: ResolvedExtras,
    forge: bool,
) -> None:
    for key in HIRES_FIELDS:
        value = params.get(key)
        if value is None or (isinstance(value, str) and not value.strip() and key != "hr_prompt"):
            continue
        if key in _FORGE_ONLY_HIRES and not forge:
            continue
        payload[key] = value
    upscaler = requested_extras(params).hr_upscaler
    if upscaler:
        payload["hr_upscaler"] = resolved.names.get(upscaler, upscaler)
    elif _text(params.get("hr_upscaler")).casefold() in _NONE - {""}:
        # "None" leaves the server's default (its latent mode), as upscaler_model "None".
        payload.pop("hr_upscaler", None)
    denoising = params.get("hr_denoising_strength")
    if isinstance(denoising, int | float) and not isinstance(denoising, bool):
        payload["denoising_strength"] = float(denoising)
    if forge:
        # Forge's hires pass reads `hr_additional_modules` unguarded: left out (None), the
        # request fails with "argument of type 'NoneType' is not iterable"; and its
        # `hr_cfg` defaults to 1, which drops the negative prompt from the hires pass.
        payload.setdefault("hr_additional_modules", [_SAME_MODULES])
        payload.setdefault("hr_cfg", payload.get("cfg_scale", _DEFAULT_CFG))
