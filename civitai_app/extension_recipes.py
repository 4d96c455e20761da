"""The parts of a recipe beyond txt2img (issue 16 point 7): img2img / inpaint settings,
ADetailer and ControlNet units, the hires pass's own fields, the VAE and Forge's modules,
read from an image's infotext values (or Civitai's meta, which carries the same keys) into
MobileSD's `generation_params` names. Pure functions, no I/O.

What the servers write, and so what is read here:

* img2img: `Denoising strength` without the hires keys; inpainting adds `Mask blur`,
  `Masked content` (fill / original / latent noise / latent nothing), `Inpaint area`
  (Only masked / Whole picture), `Masked area padding`, `Mask mode` (Inpaint masked / Inpaint
  not masked) and `Resize mode` (A1111's img2img paste fields). The images themselves are
  not in the metadata: the recipe says so in its warnings.
* ADetailer (Bing-su/adetailer `args.py`): `ADetailer model`, `ADetailer prompt`, ... for
  its first unit, the same with ` 2nd`, ` 3rd`, ... for the others; a `use separate ...`
  switch is on when its value is written. The args are `[enabled, skip img2img, unit, ...]`.
* ControlNet (Forge's built-in `lib_controlnet/infotext.py`, as sd-webui-controlnet):
  `ControlNet <n>: "Module: canny, Model: ..., Weight: 1, ..."`, each display name the
  unit's field in words (`Guidance Start` = `guidance_start`). Its input image is not in
  the metadata either, so the unit comes disabled, to be enabled with an image.
* hires: `Hires sampler`, `Hires schedule type`, `Hires prompt`, `Hires negative prompt`,
  `Hires CFG Scale`, `Hires Distilled CFG Scale`, `Hires resize-1/-2`.
* A1111's `VAE`; Forge's `Module 1..N` (stems of `forge_additional_modules`): a VAE-like
  one (`ae`, `*vae*`) is the `vae`, the others `text_encoders`.
"""

import re
from typing import Any

_ORDINAL = re.compile(r"^ADetailer model(?: (\d+)(?:st|nd|rd|th))?$")
_CONTROLNET_UNIT = re.compile(r"^ControlNet (\d+)$")
_MODULE = re.compile(r"^Module (\d+)$")

# ADetailer infotext names -> its unit's keys (args.py `_all_args`), with the kind of value.
_ADETAILER_FIELDS: dict[str, tuple[str, type]] = {
    "ADetailer model": ("ad_model", str),
    "ADetailer model classes": ("ad_model_classes", str),
    "ADetailer prompt": ("ad_prompt", str),
    "ADetailer negative prompt": ("ad_negative_prompt", str),
    "ADetailer confidence": ("ad_confidence", float),
    "ADetailer method to decide top k masks": ("ad_mask_filter_method", str),
    "ADetailer mask only top k": ("ad_mask_k", int),
    "ADetailer mask min ratio": ("ad_mask_min_ratio", float),
    "ADetailer mask max ratio": ("ad_mask_max_ratio", float),
    "ADetailer x offset": ("ad_x_offset", int),
    "ADetailer y offset": ("ad_y_offset", int),
    "ADetailer dilate erode": ("ad_dilate_erode", int),
    "ADetailer mask merge invert": ("ad_mask_merge_invert", str),
    "ADetailer mask blur": ("ad_mask_blur", int),
    "ADetailer denoising strength": ("ad_denoising_strength", float),
    "ADetailer inpaint only masked": ("ad_inpaint_only_masked", bool),
    "ADetailer inpaint padding": ("ad_inpaint_only_masked_padding", int),
    "ADetailer use inpaint width height": ("ad_use_inpaint_width_height", bool),
    "ADetailer inpaint width": ("ad_inpaint_width", int),
    "ADetailer inpaint height": ("ad_inpaint_height", int),
    "ADetailer use separate steps": ("ad_use_steps", bool),
    "ADetailer steps": ("ad_steps", int),
    "ADetailer use separate CFG scale": ("ad_use_cfg_scale", bool),
    "ADetailer CFG scale": ("ad_cfg_scale", float),
    "ADetailer use separate checkpoint": ("ad_use_checkpoint", bool),
    "ADetailer checkpoint": ("ad_checkpoint", str),
    "ADetailer use separate VAE": ("ad_use_vae", bool),
    "ADetailer VAE": ("ad_vae", str),
    "ADetailer use separate sampler": ("ad_use_sampler", bool),
    "ADetailer sampler": ("ad_sampler", str),
    "ADetailer scheduler": ("ad_scheduler", str),
    "ADetailer use separate noise multiplier": ("ad_use_noise_multiplier", bool),
    "ADetailer noise multiplier": ("ad_noise_multiplier", float),
    "ADetailer use separate CLIP skip": ("ad_use_clip_skip", bool),
    "ADetailer CLIP skip": ("ad_clip_skip", int),
    "ADetailer restore face": ("ad_restore_face", bool),
    "ADetailer ControlNet model": ("ad_controlnet_model", str),
    "ADetailer ControlNet module": ("ad_controlnet_module", str),
    "ADetailer ControlNet weight": ("ad_controlnet_weight", float),
    "ADetailer ControlNet guidance start": ("ad_controlnet_guidance_start", float),
    "ADetailer ControlNet guidance end": ("ad_controlnet_guidance_end", float),
}
# A value written means its switch was on (ADetailer drops both when it is off).
_ADETAILER_SWITCHES = {
    "ad_steps": "ad_use_steps",
    "ad_cfg_scale": "ad_use_cfg_scale",
    "ad_checkpoint": "ad_use_checkpoint",
    "ad_vae": "ad_use_vae",
    "ad_sampler": "ad_use_sampler",
    "ad_noise_multiplier": "ad_use_noise_multiplier",
    "ad_clip_skip": "ad_use_clip_skip",
    "ad_inpaint_width": "ad_use_inpaint_width_height",
}

_HIRES_FIELDS: dict[str, tuple[str, type]] = {
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Hires CFG Scale": ("hr_cfg", float),
    "Hires Distilled CFG Scale": ("hr_distilled_cfg", float),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
}
_HIRES_KEYS = ("Hires upscale", "Hires upscaler", "Hires steps", "Hires resize-1")
_INPAINT_KEYS = ("Mask blur", "Masked content", "Inpaint area", "Masked area padding")
_MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
_RESIZE_MODES = (
    "just resize",
    "crop and resize",
    "resize and fill",
    "just resize (latent upscale)",
)

ADETAILER_TITLE = "ADetailer"
CONTROLNET_TITLE = "ControlNet"


def _value(text: str, kind: type) -> Any:
    """An infotext value as `kind`; None when it is not one."""
    text = text.strip()
    if kind is bool:
        return {"true": True, "false": False}.get(text.lower())
    if kind is int:
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            return None
    return text


def _controlnet_value(text: str) -> Any:
    """As ControlNet's own `parse_value`: True/False, an int, a float, else the text."""
    text = text.strip()
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def adetailer_units(values: dict[str, str]) -> list[dict[str, Any]]:
    """ADetailer's units, in order (1st, 2nd, ...), as its API args take them."""
    ordinals: dict[int, str] = {}
    for key in values:
        match = _ORDINAL.match(key)
        if match:
            number = int(match.group(1) or 1)
            ordinals[number] = "" if number == 1 else key[len("ADetailer model") :]
    units = []
    for number in sorted(ordinals):
        suffix = ordinals[number]
        unit: dict[str, Any] = {}
        for name, (field, kind) in _ADETAILER_FIELDS.items():
            raw = values.get(name + suffix)
            value = _value(raw, kind) if raw is not None else None
            if value is not None:
                unit[field] = value
        for field, switch in _ADETAILER_SWITCHES.items():
            if field in unit:
                unit.setdefault(switch, True)
        if unit.get("ad_model") and unit["ad_model"] != "None":
            units.append(unit)
    return units


def controlnet_units(values: dict[str, str]) -> list[dict[str, Any]]:
    """ControlNet's units (`ControlNet 0`, `ControlNet 1`, ...), disabled: their input
    images are not in the metadata."""
    found: list[tuple[int, dict[str, Any]]] = []
    for key, text in values.items():
        match = _CONTROLNET_UNIT.match(key)
        if not match or not isinstance(text, str):
            continue
        unit: dict[str, Any] = {"enabled": False}
        for item in text.split(","):
            name, sep, value = item.strip().partition(": ")
            if sep and name.strip():
                field = "_".join(word.lower() for word in name.strip().split(" "))
                unit[field] = _controlnet_value(value)
        if len(unit) > 1:
            found.append((int(match.group(1)), unit))
    return [unit for _, unit in sorted(found, key=lambda pair: pair[0])]


def _modules(values: dict[str, str]) -> tuple[str, list[str]]:
    """Forge's `Module N` values: (the VAE, the text encoders)."""
    numbered = sorted(
        (int(match.group(1)), text.strip())
        for key, text in values.items()
        if (match := _MODULE.match(key)) and isinstance(text, str) and text.strip()
    )
    vae = ""
    encoders = []
    for _, name in numbered:
        if not vae and (name.casefold() == "ae" or "vae" in name.casefold()):
            vae = name
        else:
            encoders.append(name)
    return vae, encoders


def extension_params_from(values: dict[str, str]) -> dict[str, Any]:
    """The `generation_params` beyond txt2img's that the values say: mode and inpainting
    fields, hires-pass fields, VAE and modules, `alwayson_scripts` (ADetailer, ControlNet)."""
    params: dict[str, Any] = {}
    hires = any(key in values for key in _HIRES_KEYS)
    if hires:
        for name, (field, kind) in _HIRES_FIELDS.items():
            raw = values.get(name)
            value = _value(raw, kind) if raw is not None else None
            if value is not None and value != "":
                params[field] = value
    elif "Denoising strength" in values:
        inpaint = any(key in values for key in _INPAINT_KEYS)
        params["mode"] = "inpaint" if inpaint else "img2img"
        resize = (values.get("Resize mode") or "").strip().lower()
        if resize in _RESIZE_MODES:
            params["resize_mode"] = _RESIZE_MODES.index(resize)
        if inpaint:
            params.update(_inpaint_params(values))

    vae = (values.get("VAE") or "").strip()
    forge_vae, encoders = _modules(values)
    if vae or forge_vae:
        params["vae"] = vae or forge_vae
    if encoders:
        params["text_encoders"] = encoders

    scripts: dict[str, Any] = {}
    adetailer = adetailer_units(values)
    if adetailer:
        scripts[ADETAILER_TITLE] = {"args": [True, False, *adetailer]}
    controlnet = controlnet_units(values)
    if controlnet:
        scripts[CONTROLNET_TITLE] = {"args": controlnet}
    if scripts:
        params["alwayson_scripts"] = scripts
    return params


def _inpaint_params(values: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    blur = _value(values.get("Mask blur") or "", int)
    if blur is not None:
        params["mask_blur"] = blur
    content = (values.get("Masked content") or "").strip().lower()
    if content in _MASKED_CONTENT:
        params["inpainting_fill"] = _MASKED_CONTENT.index(content)
    area = (values.get("Inpaint area") or "").strip().lower()
    if area in ("only masked", "whole picture"):
        params["inpaint_full_res"] = area == "only masked"
    padding = _value(values.get("Masked area padding") or "", int)
    if padding is not None:
        params["inpaint_full_res_padding"] = padding
    mode = (values.get("Mask mode") or "").strip().lower()
    if mode in ("inpaint masked", "inpaint not masked"):
        params["inpainting_mask_invert"] = int(mode == "inpaint not masked")
    return params


def extension_warnings(params: dict[str, Any]) -> list[str]:
    """What a person must add before submitting the recipe: the images the metadata does
    not carry."""
    warnings = []
    mode = params.get("mode")
    if mode in ("img2img", "inpaint"):
        needs = "its init image and mask" if mode == "inpaint" else "its init image"
        warnings.append(
            f"The image was made with {mode}: add {needs} (upload ids in init_images"
            f"{' and mask' if mode == 'inpaint' else ''}) before submitting."
        )
    scripts = params.get("alwayson_scripts") or {}
    units = (scripts.get(CONTROLNET_TITLE) or {}).get("args") or []
    if units:
        warnings.append(
            f"ControlNet ({len(units)} unit{'s' if len(units) > 1 else ''}) comes disabled: "
            "its input images are not in the metadata; add each unit's image and set "
            '"enabled": true to use it.'
        )
    return warnings
