"""MobileSD `generation_params` -> A1111/Forge `POST /sdapi/v1/txt2img` request body.

`generation_params` keeps the documented MobileSD names (``SEED_API.md``); this module is the
one place that turns them into the server's field names. Pure functions: no Django, no I/O.

Invariants of `build_txt2img_payload`:

* The payload always has ``save_images: false``, ``send_images: true``,
  ``override_settings_restore_afterwards: false``, ``force_task_id`` = our task id, and an
  ``override_settings`` object (holding ``sd_model_checkpoint`` when a title is given).
* Unknown keys are ignored and malformed values are dropped (the server default applies) or
  replaced by a safe default; building a payload never raises for bad input.

Mapping decisions (see also the function docstrings):

* ``num_images`` -> ``n_iter = num_images``, ``batch_size = 1``: images are generated one after
  another, so VRAM use does not grow with the count (a batch of 4 SDXL images can run a
  laptop GPU out of memory) and the server reports progress per image.
* ``seed`` / ``subseed``: ``""``, None, -1, ``"-1"`` or anything not an integer -> -1 (random).
* ``scheduler_or_quality_preset`` is sent as ``scheduler`` only when it names a real
  A1111/Forge scheduler (by label, name or alias, case-insensitive); the original app's
  quality presets ("Balanced", "Quality", "Speed", ...) are not scheduler names and stay in
  the job as metadata only. Sending them would make the server fall back to ``Automatic``
  silently anyway.
* ``override_settings_restore_afterwards: false`` keeps the requested checkpoint loaded after
  the job, so the next job for the same checkpoint does not reload it (restoring makes A1111
  reload the configured model for the next request).
* ``style_preset`` and ``sampling_category`` are metadata only (not sent).
"""

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "FLAVOUR_A1111",
    "FLAVOUR_FORGE",
    "METADATA_ONLY_KEYS",
    "build_img2img_payload",
    "build_txt2img_payload",
    "image_mode",
    "lora_prompt_suffix",
    "loras_sent",
    "requested_loras",
    "rewrite_lora_tags",
    "scheduler_for",
]

FLAVOUR_FORGE: Final = "forge"
FLAVOUR_A1111: Final = "a1111"

# Kept in the job for display and history, never sent to the server.
METADATA_ONLY_KEYS: Final = frozenset({"style_preset", "sampling_category"})

# Request fields that only Forge 2 understands (REFERENCE.md A.7). A1111 would silently
# ignore them; dropping them keeps the echoed `parameters` honest about what was applied.
_FORGE_ONLY_FIELDS: Final = ("distilled_cfg_scale",)

# A "None" choice in the phone's pickers means "no model".
_NONE_CHOICES: Final = frozenset({"", "none", "null"})

# Hires-fix denoising when the phone gives none: the web UI's default. Forge's API default
# is null, which a hires pass cannot run with.
_DEFAULT_HIRES_DENOISING: Final = 0.7
_DEFAULT_REFINER_SWITCH_AT: Final = 0.8

# A1111 1.10 / Forge 2 schedulers (`modules/sd_schedulers.py`): name, label, aliases.
_SCHEDULERS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("automatic", "Automatic", ()),
    ("uniform", "Uniform", ()),
    ("karras", "Karras", ()),
    ("exponential", "Exponential", ()),
    ("polyexponential", "Polyexponential", ()),
    ("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    ("kl_optimal", "KL Optimal", ()),
    ("align_your_steps", "Align Your Steps", ()),
    ("simple", "Simple", ()),
    ("normal", "Normal", ()),
    ("ddim", "DDIM", ()),
    ("beta", "Beta", ()),
    ("turbo", "Turbo", ()),
    ("align_your_steps_GITS", "Align Your Steps GITS", ()),
    ("align_your_steps_11", "Align Your Steps 11", ()),
    ("align_your_steps_32", "Align Your Steps 32", ()),
)


def _scheduler_key(value: str) -> str:
    # "SGM Uniform", "sgm_uniform" and "sgm-uniform" are the same scheduler.
    return " ".join(re.split(r"[\s_\-]+", value.strip().lower()))


_SCHEDULER_LABELS: Final[dict[str, str]] = {
    _scheduler_key(spelling): label
    for name, label, aliases in _SCHEDULERS
    for spelling in (name, label, *aliases)
}


def scheduler_for(value: Any) -> str | None:
    """The scheduler label `value` names (``"karras"`` -> ``"Karras"``), or None.

    Servers accept label or name; the label is what their infotext shows.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    return _SCHEDULER_LABELS.get(_scheduler_key(value))


# --- defensive coercion ------------------------------------------------------------------


def _to_int(value: Any) -> int | None:
    """An int from an int, an integral float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = _to_float(text)
            return int(number) if number is not None and number.is_integer() else None
    return None


def _to_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"true", "yes", "on", "1"}:
            return True
        if text in {"false", "no", "off", "0", ""}:
            return False
    return None


def _to_seed(value: Any) -> int:
    """-1 (random) for "", None, -1 and anything that is not a non-negative integer."""
    seed = _to_int(value)
    return seed if seed is not None and seed >= 0 else -1


def _to_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _model_choice(value: Any) -> str | None:
    """A model name picked on the phone, or None for "None"/empty/not a string."""
    if not isinstance(value, str) or value.strip().lower() in _NONE_CHOICES:
        return None
    return value.strip()


# --- LoRAs -------------------------------------------------------------------------------

# Characters that would end or split an extra-network tag `<lora:name:weight>`.
_LORA_NAME_FORBIDDEN: Final = re.compile(r"[<>:]")


def _format_weight(weight: float) -> str:
    text = f"{weight:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _lora_in_prompt(name: str, prompt: str) -> bool:
    # Case-insensitive: on Windows servers `<lora:Foo>` and `<lora:foo>` load the same file,
    # and applying a LoRA twice doubles its weight.
    pattern = r"<lora:" + re.escape(name) + r"\s*(?::[^>]*)?>"
    return re.search(pattern, prompt, re.IGNORECASE) is not None


def _prompt_of(params: Mapping[str, Any]) -> str:
    # The documented name wins; a lone `prompt` (older clients) is accepted too.
    return _to_text(params.get("positive_prompt")) or _to_text(params.get("prompt"))


# `<lora:NAME>` or `<lora:NAME:weight...>` (`lyco` is the servers' other name for the same
# network type): group 1 the type, 2 the name, 3 the rest of the arguments.
_LORA_TAG: Final = re.compile(r"<(lora|lyco):([^:>]*)((?::[^>]*)?)>")


def _lora_entry_name(entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return None
    raw_name = entry.get("name")
    if not isinstance(raw_name, str) or not raw_name.strip():
        return None
    return raw_name.strip()


def requested_loras(params: Mapping[str, Any]) -> list[str]:
    """The LoRAs a job asks for, as written (trimmed), each once, in prompt order: those
    tagged in the positive prompt, then the `loras` entries. The caller resolves them to
    the server's names for `build_txt2img_payload(lora_names=...)`."""
    names = [match.group(2).strip() for match in _LORA_TAG.finditer(_prompt_of(params))]
    raw_loras = params.get("loras")
    if isinstance(raw_loras, list | tuple):
        names += [name for name in map(_lora_entry_name, raw_loras) if name is not None]
    return list(dict.fromkeys(name for name in names if name))


def rewrite_lora_tags(prompt: str, names: Mapping[str, str]) -> str:
    """`prompt` with the name of each `<lora:...>` tag replaced by its entry in `names`
    (requested, trimmed -> the server's name); other tags, and each tag's weight and
    further arguments, are kept as written."""

    def rename(match: re.Match[str]) -> str:
        kind, name, rest = match.groups()
        server_name = names.get(name.strip())
        return match.group(0) if server_name is None else f"<{kind}:{server_name}{rest}>"

    return _LORA_TAG.sub(rename, prompt) if names else prompt


def lora_prompt_suffix(
    loras: Iterable[Any], *, prompt: str = "", names: Mapping[str, str] | None = None
) -> str:
    """The ``<lora:name:weight>`` tags for `loras`, space-separated, to append to a prompt.

    Each entry is ``{"name": str, "weight": number}`` (weight defaults to 1.0); `names` maps
    a requested name to the server's (see `requested_loras`), others are sent as written.
    Entries without a usable name are skipped, as are LoRAs already tagged in `prompt` or
    earlier in the list (compared case-insensitively, by the name sent). Returns ``""``
    when there is nothing to add; the caller adds the separator.
    """
    tags: list[str] = []
    seen = prompt
    for entry in loras:
        requested = _lora_entry_name(entry)
        if requested is None:
            continue
        name = (names or {}).get(requested, requested)
        if _LORA_NAME_FORBIDDEN.search(name) or _lora_in_prompt(name, seen):
            continue
        weight = _to_float(entry.get("weight"))
        tag = f"<lora:{name}:{_format_weight(1.0 if weight is None else weight)}>"
        tags.append(tag)
        seen = f"{seen} {tag}"
    return " ".join(tags)


def loras_sent(prompt: str) -> list[str]:
    """The LoRA names a prompt built by `build_txt2img_payload` sends, each once."""
    names = (match.group(2).strip() for match in _LORA_TAG.finditer(prompt))
    return list(dict.fromkeys(name for name in names if name))


# --- payload -----------------------------------------------------------------------------


def build_txt2img_payload(
    params: Mapping[str, Any],
    *,
    task_id: str,
    checkpoint_title: str | None,
    flavour: str | None = None,
    refiner_title: str | None = None,
    lora_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``POST /sdapi/v1/txt2img`` body for MobileSD `params` (see the module docstring).

    `checkpoint_title` is the server's exact title (resolve it first: an unknown title is
    silently ignored by the server, which then uses whatever model is loaded). `flavour` is
    ``"forge"``, ``"a1111"`` or None (unknown: Forge-only fields are kept, other servers
    ignore them); any flavour other than Forge drops Forge-only fields. `refiner_title`, when
    given, replaces the raw ``refiner_model`` name (an unknown refiner fails the job).
    `lora_names` maps each LoRA as requested (`requested_loras`) to the server's name, in
    the `loras` entries and in the prompt's own ``<lora:...>`` tags (the server ignores a
    name it does not know exactly, silently).

    Keys read: ``positive_prompt`` (or ``prompt``), ``negative_prompt``, ``loras``,
    ``width``, ``height``, ``steps``, ``cfg_scale``, ``distilled_cfg_scale``,
    ``sampler_name``, ``scheduler_or_quality_preset``, ``restore_faces``, ``seed``,
    ``subseed``, ``subseed_strength``, ``num_images``, ``clip_skip``, ``denoising_strength``,
    ``enable_hires_fix``, ``upscaler_model``, ``hires_scale``, ``hires_steps``,
    ``refiner_model``, ``refiner_switch_at``.
    """
    prompt = rewrite_lora_tags(_prompt_of(params), lora_names or {})
    raw_loras = params.get("loras")
    if isinstance(raw_loras, list | tuple):
        tags = lora_prompt_suffix(raw_loras, prompt=prompt, names=lora_names)
        if tags:
            prompt = f"{prompt} {tags}" if prompt.strip() else tags

    override_settings: dict[str, Any] = {}
    if checkpoint_title:
        override_settings["sd_model_checkpoint"] = checkpoint_title

    payload: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": _to_text(params.get("negative_prompt")),
        "seed": _to_seed(params.get("seed")),
        "subseed": _to_seed(params.get("subseed")),
        "batch_size": 1,
        "n_iter": max(_to_int(params.get("num_images")) or 1, 1),
        "save_images": False,
        "send_images": True,
        "override_settings": override_settings,
        "override_settings_restore_afterwards": False,
        "force_task_id": task_id,
    }

    for key in ("width", "height", "steps"):
        number = _to_int(params.get(key))
        if number is not None and number > 0:
            payload[key] = number
    for key in ("cfg_scale", "distilled_cfg_scale", "subseed_strength", "denoising_strength"):
        value = _to_float(params.get(key))
        if value is not None:
            payload[key] = value

    sampler = params.get("sampler_name")
    if isinstance(sampler, str) and sampler.strip():
        payload["sampler_name"] = sampler.strip()
    scheduler = scheduler_for(params.get("scheduler_or_quality_preset"))
    if scheduler is not None:
        payload["scheduler"] = scheduler

    restore_faces = _to_bool(params.get("restore_faces"))
    if restore_faces is not None:
        payload["restore_faces"] = restore_faces

    clip_skip = _to_int(params.get("clip_skip"))
    if clip_skip is not None and clip_skip >= 1:
        override_settings["CLIP_stop_at_last_layers"] = clip_skip

    if _to_bool(params.get("enable_hires_fix")):
        _add_hires_fix(payload, params)

    refiner = refiner_title or _model_choice(params.get("refiner_model"))
    if refiner is not None:
        payload["refiner_checkpoint"] = refiner
        switch_at = _to_float(params.get("refiner_switch_at"))
        in_range = switch_at is not None and 0.0 < switch_at <= 1.0
        payload["refiner_switch_at"] = switch_at if in_range else _DEFAULT_REFINER_SWITCH_AT

    if flavour is not None and flavour.strip().lower() != FLAVOUR_FORGE:
        for key in _FORGE_ONLY_FIELDS:
            payload.pop(key, None)
    return payload


def _add_hires_fix(payload: dict[str, Any], params: Mapping[str, Any]) -> None:
    payload["enable_hr"] = True
    # "None" leaves hr_upscaler unset, so the server uses its default latent upscale mode;
    # sending the literal "None" would select the no-op pixel upscaler instead.
    upscaler = _model_choice(params.get("upscaler_model"))
    if upscaler is not None:
        payload["hr_upscaler"] = upscaler
    scale = _to_float(params.get("hires_scale"))
    if scale is not None and scale >= 1.0:
        payload["hr_scale"] = scale
    hires_steps = _to_int(params.get("hires_steps"))
    if hires_steps is not None and hires_steps >= 0:
        payload["hr_second_pass_steps"] = hires_steps
    payload.setdefault("denoising_strength", _DEFAULT_HIRES_DENOISING)


# --- checkpoint titles -------------------------------------------------------------------


# --- img2img / inpaint (issue #16 point 2) -----------------------------------------------

MODE_IMG2IMG: Final = "img2img"
MODE_INPAINT: Final = "inpaint"

# txt2img's fields that img2img's request model does not have (its hires fix is txt2img's).
_TXT2IMG_ONLY_FIELDS: Final = (
    "enable_hr",
    "hr_upscaler",
    "hr_scale",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "firstphase_width",
    "firstphase_height",
)

# generation_params key (the img2img field's name too) -> its range: sent when in it.
_IMG2IMG_INTS: Final = {
    "resize_mode": (0, 3),
    "mask_blur": (0, 64),
    "inpainting_fill": (0, 3),
    "inpaint_full_res_padding": (0, 256),
    "inpainting_mask_invert": (0, 1),
}


def image_mode(params: Mapping[str, Any]) -> str | None:
    """ "img2img" or "inpaint" when `params` asks for one (sent to /sdapi/v1/img2img), else
    None (txt2img)."""
    mode = params.get("mode")
    return mode if mode in (MODE_IMG2IMG, MODE_INPAINT) else None


def build_img2img_payload(
    params: Mapping[str, Any],
    *,
    init_images: list[str],
    mask: str | None,
    task_id: str,
    checkpoint_title: str | None,
    flavour: str | None = None,
    refiner_title: str | None = None,
    lora_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``POST /sdapi/v1/img2img`` body: txt2img's (`build_txt2img_payload`, the same
    invariants) without its hires fix, plus `init_images` and, for mode "inpaint", `mask`
    (both base64 of the stored files, as given) and the inpaint settings.

    ``include_init_images: false`` (the server's default, sent to be sure): the answer
    does not echo megabytes of base64 back. A value out of range is dropped (the server's
    default applies); `denoising_strength` is sent only when given (the server's default
    is 0.75)."""
    payload = build_txt2img_payload(
        params,
        task_id=task_id,
        checkpoint_title=checkpoint_title,
        flavour=flavour,
        refiner_title=refiner_title,
        lora_names=lora_names,
    )
    for key in _TXT2IMG_ONLY_FIELDS:
        payload.pop(key, None)
    if _to_float(params.get("denoising_strength")) is None:
        payload.pop("denoising_strength", None)  # the hires fix's default, not img2img's
    strength = payload.get("denoising_strength")
    if strength is not None and not 0.0 <= strength <= 1.0:
        payload.pop("denoising_strength")
    payload["init_images"] = list(init_images)
    payload["include_init_images"] = False
    for key, (low, high) in _IMG2IMG_INTS.items():
        if key == "resize_mode" or image_mode(params) == MODE_INPAINT:
            number = _to_int(params.get(key))
            if number is not None and low <= number <= high:
                payload[key] = number
    if image_mode(params) == MODE_INPAINT and mask is not None:
        payload["mask"] = mask
        full_res = _to_bool(params.get("inpaint_full_res"))
        if full_res is not None:
            payload["inpaint_full_res"] = full_res
    return payload
