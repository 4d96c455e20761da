"""The simulated servers' scripts and extensions: `/sdapi/v1/scripts`, `/sdapi/v1/script-info`,
`/sdapi/v1/prompt-styles`, ControlNet's `/controlnet/model_list`, ADetailer's
`/adetailer/v1/ad_model`, and the checks a generation request's `script_name` and
`alwayson_scripts` go through, as A1111/Forge's `modules/api/api.py` makes them:

* titles compare in lower case (`script_name_to_index`); an unknown one, selectable or
  always-on, is a 422 `Script '<name>' not found`;
* a selectable script among `alwayson_scripts` is a 422 `Cannot have a selectable script in
  the always on scripts params`; an always-on one as `script_name` is not found (it is not
  among the selectable scripts);
* each always-on script takes the first of its `args` (as many as it has), the rest are
  ignored.

ScriptInfo lists one entry per script and mode, `args` as `ScriptArg` objects (`label`,
`value`, `minimum`, `maximum`, `step`, `choices`; unset ones null).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import ADETAILER_TITLE, CONTROLNET_TITLE, SimulatorConfig
from .errors import http_error

MODES = ("txt2img", "img2img")


def _arg(
    label: str,
    value: Any = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    step: float | None = None,
    choices: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "label": label,
        "value": value,
        "minimum": minimum,
        "maximum": maximum,
        "step": step,
        "choices": choices,
    }


# The arguments of the scripts, as their UI controls describe them (a handful, not all).
_ARGS: dict[str, list[dict[str, Any]]] = {
    "refiner": [
        _arg("Refiner", False),
        _arg("Checkpoint", ""),
        _arg("Switch at", 0.8, minimum=0.01, maximum=1, step=0.01),
    ],
    "seed": [_arg("Seed", -1), _arg("Extra", False), _arg("Variation seed", -1)],
    "sampler": [_arg("Sampling method", "DPM++ 2M"), _arg("Schedule type", "Automatic")],
    "hypertile": [],
    "extra options": [],
    "x/y/z plot": [
        _arg(
            "X type", "Seed", choices=["Nothing", "Seed", "Steps", "CFG Scale", "Checkpoint name"]
        ),
        _arg("X values", ""),
        _arg("Y type", "Nothing"),
        _arg("Y values", ""),
    ],
    "prompt matrix": [_arg("Put variable parts at start of prompt", False)],
    "prompts from file or textbox": [
        _arg("Iterate seed every line", False),
        _arg("List of prompt inputs", ""),
    ],
    CONTROLNET_TITLE: [_arg(f"ControlNet Unit {index}", None) for index in range(3)],
    ADETAILER_TITLE: [
        _arg("Enable ADetailer", False),
        _arg("Skip img2img", False),
        _arg("1st", None),
        _arg("2nd", None),
    ],
}


def _alwayson(config: SimulatorConfig) -> tuple[str, ...]:
    return config.alwayson_scripts()


def scripts_json(config: SimulatorConfig) -> dict[str, list[str]]:
    """`/sdapi/v1/scripts`: every script's lower-case title per mode, selectable ones first
    (`script_runner.scripts` order: the selectable ones are loaded from `scripts/`)."""
    return {mode: [*config.selectable_scripts(mode), *_alwayson(config)] for mode in MODES}


def script_info_json(config: SimulatorConfig) -> list[dict[str, Any]]:
    """`/sdapi/v1/script-info`: the txt2img scripts, then the img2img ones."""
    info = []
    for mode in MODES:
        for title in config.selectable_scripts(mode):
            info.append(_info(title, mode, alwayson=False))
        for title in _alwayson(config):
            info.append(_info(title, mode, alwayson=True))
    return info


def _info(title: str, mode: str, *, alwayson: bool) -> dict[str, Any]:
    return {
        "name": title,
        "is_alwayson": alwayson,
        "is_img2img": mode == "img2img",
        "args": [dict(arg) for arg in _ARGS.get(title, [])],
    }


def styles_json(config: SimulatorConfig) -> list[dict[str, Any]]:
    """`/sdapi/v1/prompt-styles`."""
    return [
        {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
        for style in config.styles
    ]


def _with_style(text: str, style: str) -> str:
    # A style's "{prompt}" is where the prompt goes; without one the style follows the
    # prompt after ", " (both stripped, an empty one left out).
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return ", ".join(part for part in (text.strip(), style.strip()) if part)


def styled_prompts(
    config: SimulatorConfig, prompt: str, negative_prompt: str, names: Iterable[str]
) -> tuple[str, str]:
    """The prompt and negative prompt with the request's `styles` applied as the servers
    do (`modules/styles.py`), each style in turn to what the previous one made: a name
    looked up exactly, an unknown one taken as an empty style. What the server generates
    from, writes in the infotext and answers as `prompt` / `negative_prompt`."""
    known = {style.name: style for style in config.styles}
    for name in names:
        style = known.get(name)
        prompt = _with_style(prompt, style.prompt if style else "")
        negative_prompt = _with_style(negative_prompt, style.negative_prompt if style else "")
    return prompt, negative_prompt


def controlnet_models_json(config: SimulatorConfig) -> dict[str, list[str]]:
    """ControlNet's `/controlnet/model_list`."""
    return {"model_list": list(config.controlnet_models)}


def adetailer_models_json(config: SimulatorConfig) -> dict[str, list[str]]:
    """ADetailer's `/adetailer/v1/ad_model`."""
    return {"ad_model": list(config.adetailer_models)}


def check_scripts(config: SimulatorConfig, params: dict[str, Any], mode: str) -> None:
    """Refuse `script_name` and `alwayson_scripts` as the server's `init_script_args` does."""
    forge = config.is_forge
    selectable = config.selectable_scripts(mode)
    alwayson = _alwayson(config)
    script = params.get("script_name")
    if script not in (None, "") and str(script).lower() not in selectable:
        raise http_error(forge, 422, f"Script '{script}' not found")
    for name in params.get("alwayson_scripts") or {}:
        title = str(name).lower()
        if title in selectable and title not in alwayson:
            raise http_error(
                forge, 422, "Cannot have a selectable script in the always on scripts params"
            )
        if title not in alwayson:
            raise http_error(forge, 422, f"Script '{name}' not found")
