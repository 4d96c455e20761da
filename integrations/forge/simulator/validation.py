"""Request models and FastAPI-style validation (pydantic 2 for Forge, pydantic 1 for A1111).

Every generation field is optional with the dataclass default, except the API-only extras
(`sampler_index`, `script_args`, `send_images`, `save_images`, `alwayson_scripts`). Values are
coerced like pydantic's lax mode (`"20"` -> 20); wrong types give a 422 whose items follow the
pydantic version of the flavour. Unknown keys are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import validation_error


class Kind(Enum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    LIST_STR = "list[str]"
    LIST = "list"
    DICT = "dict"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Kind
    default: Any = None
    nullable: bool = True


_S, _I, _F, _B, _LS, _L, _D = (
    Kind.STR,
    Kind.INT,
    Kind.FLOAT,
    Kind.BOOL,
    Kind.LIST_STR,
    Kind.LIST,
    Kind.DICT,
)

_FORGE_ONLY = frozenset(
    {"distilled_cfg_scale", "hr_additional_modules", "hr_cfg", "hr_distilled_cfg"}
)

_BASE_HEAD: tuple[FieldSpec, ...] = (
    FieldSpec("prompt", _S, ""),
    FieldSpec("negative_prompt", _S, ""),
    FieldSpec("styles", _LS),
    FieldSpec("seed", _I, -1),
    FieldSpec("subseed", _I, -1),
    FieldSpec("subseed_strength", _F, 0),
    FieldSpec("seed_resize_from_h", _I, -1),
    FieldSpec("seed_resize_from_w", _I, -1),
    FieldSpec("sampler_name", _S),
    FieldSpec("scheduler", _S),
    FieldSpec("batch_size", _I, 1),
    FieldSpec("n_iter", _I, 1),
    FieldSpec("steps", _I, 50),
    FieldSpec("cfg_scale", _F, 7.0),
    FieldSpec("distilled_cfg_scale", _F, 3.5),
    FieldSpec("width", _I, 512),
    FieldSpec("height", _I, 512),
    FieldSpec("restore_faces", _B),
    FieldSpec("tiling", _B),
    FieldSpec("do_not_save_samples", _B, False),
    FieldSpec("do_not_save_grid", _B, False),
    FieldSpec("eta", _F),
    FieldSpec("denoising_strength", _F),
    FieldSpec("s_min_uncond", _F),
    FieldSpec("s_churn", _F),
    FieldSpec("s_tmax", _F),
    FieldSpec("s_tmin", _F),
    FieldSpec("s_noise", _F),
    FieldSpec("override_settings", _D),
    FieldSpec("override_settings_restore_afterwards", _B, True),
    FieldSpec("refiner_checkpoint", _S),
    FieldSpec("refiner_switch_at", _F),
    FieldSpec("disable_extra_networks", _B, False),
    FieldSpec("firstpass_image", _S),
    FieldSpec("comments", _D),
)

_TXT2IMG_MIDDLE: tuple[FieldSpec, ...] = (
    FieldSpec("enable_hr", _B, False),
    FieldSpec("firstphase_width", _I, 0),
    FieldSpec("firstphase_height", _I, 0),
    FieldSpec("hr_scale", _F, 2.0),
    FieldSpec("hr_upscaler", _S),
    FieldSpec("hr_second_pass_steps", _I, 0),
    FieldSpec("hr_resize_x", _I, 0),
    FieldSpec("hr_resize_y", _I, 0),
    FieldSpec("hr_checkpoint_name", _S),
    FieldSpec("hr_additional_modules", _L),
    FieldSpec("hr_sampler_name", _S),
    FieldSpec("hr_scheduler", _S),
    FieldSpec("hr_prompt", _S, ""),
    FieldSpec("hr_negative_prompt", _S, ""),
    FieldSpec("hr_cfg", _F, 1.0),
    FieldSpec("hr_distilled_cfg", _F, 3.5),
    FieldSpec("force_task_id", _S),
)

_IMG2IMG_MIDDLE: tuple[FieldSpec, ...] = (
    FieldSpec("init_images", _L),
    FieldSpec("resize_mode", _I, 0),
    FieldSpec("image_cfg_scale", _F),
    FieldSpec("mask", _S),
    FieldSpec("mask_blur_x", _I, 4),
    FieldSpec("mask_blur_y", _I, 4),
    FieldSpec("mask_blur", _I),
    FieldSpec("mask_round", _B, True),
    FieldSpec("inpainting_fill", _I, 0),
    FieldSpec("inpaint_full_res", _B, True),
    FieldSpec("inpaint_full_res_padding", _I, 0),
    FieldSpec("inpainting_mask_invert", _I, 0),
    FieldSpec("initial_noise_multiplier", _F),
    FieldSpec("latent_mask", _S),
    FieldSpec("force_task_id", _S),
    FieldSpec("hr_distilled_cfg", _F, 3.5),
)

_API_TAIL: tuple[FieldSpec, ...] = (
    FieldSpec("sampler_index", _S, "Euler", nullable=False),
    FieldSpec("script_name", _S),
    FieldSpec("script_args", _L, [], nullable=False),
    FieldSpec("send_images", _B, True, nullable=False),
    FieldSpec("save_images", _B, False, nullable=False),
    FieldSpec("alwayson_scripts", _D, {}, nullable=False),
    FieldSpec("infotext", _S),
)


def generation_fields(mode: str, *, is_forge: bool) -> tuple[FieldSpec, ...]:
    """The request model of `txt2img` / `img2img` for a flavour, in schema order."""
    if mode == "txt2img":
        fields = _BASE_HEAD + _TXT2IMG_MIDDLE + _API_TAIL
    else:
        tail = (FieldSpec("include_init_images", _B, False, nullable=False),)
        fields = _BASE_HEAD + _IMG2IMG_MIDDLE + _API_TAIL[:1] + tail + _API_TAIL[1:]
    result: list[FieldSpec] = []
    for spec in fields:
        if not is_forge and spec.name in _FORGE_ONLY:
            continue
        if spec.name == "denoising_strength":
            default = 0.75 if mode == "img2img" else (None if is_forge else 0)
            spec = FieldSpec(spec.name, spec.kind, default)
        result.append(spec)
    return tuple(result)


PROGRESS_REQUEST_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id_task", _S),
    FieldSpec("id_live_preview", _I, -1, nullable=False),
    FieldSpec("live_preview", _B, True, nullable=False),
)

PNG_INFO_FIELDS: tuple[FieldSpec, ...] = (FieldSpec("image", _S, nullable=False),)

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class _Invalid(Exception):
    def __init__(self, v2_type: str, v2_msg: str, v1_type: str, v1_msg: str) -> None:
        super().__init__(v2_msg)
        self.v2_type, self.v2_msg, self.v1_type, self.v1_msg = v2_type, v2_msg, v1_type, v1_msg


_INT_TYPE = (
    "int_type",
    "Input should be a valid integer",
    "type_error.integer",
    "value is not a valid integer",
)
_FLOAT_TYPE = (
    "float_type",
    "Input should be a valid number",
    "type_error.float",
    "value is not a valid float",
)
_BOOL_TYPE = (
    "bool_type",
    "Input should be a valid boolean",
    "type_error.bool",
    "value could not be parsed to a boolean",
)
_STR_TYPE = ("string_type", "Input should be a valid string", "type_error.str", "str type expected")
_LIST_TYPE = (
    "list_type",
    "Input should be a valid list",
    "type_error.list",
    "value is not a valid list",
)
_DICT_TYPE = (
    "dict_type",
    "Input should be a valid dictionary",
    "type_error.dict",
    "value is not a valid dict",
)


def _coerce(kind: Kind, value: Any, v2: bool) -> Any:
    """Coerce one value like pydantic's lax mode, or raise `_Invalid`."""
    if kind is Kind.INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value.is_integer() or not v2:
                return int(value)
            raise _Invalid(
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
                *_INT_TYPE[2:],
            )
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Invalid(
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                    *_INT_TYPE[2:],
                ) from None
        raise _Invalid(*_INT_TYPE)
    if kind is Kind.FLOAT:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _Invalid(
                    "float_parsing",
                    "Input should be a valid number, unable to parse string as a number",
                    *_FLOAT_TYPE[2:],
                ) from None
        raise _Invalid(*_FLOAT_TYPE)
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | str) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        if isinstance(value, int | str):
            raise _Invalid(
                "bool_parsing",
                "Input should be a valid boolean, unable to interpret input",
                *_BOOL_TYPE[2:],
            )
        raise _Invalid(*_BOOL_TYPE)
    if kind is Kind.STR:
        if isinstance(value, str):
            return value
        if not v2 and isinstance(value, int | float):
            return str(value)
        raise _Invalid(*_STR_TYPE)
    if kind in (Kind.LIST, Kind.LIST_STR):
        if not isinstance(value, list):
            raise _Invalid(*_LIST_TYPE)
        return list(value)
    if not isinstance(value, dict):
        raise _Invalid(*_DICT_TYPE)
    return dict(value)


def _error_item(loc: list[Any], err: _Invalid, value: Any, v2: bool) -> dict[str, Any]:
    if v2:
        return {"type": err.v2_type, "loc": loc, "msg": err.v2_msg, "input": value}
    return {"loc": loc, "msg": err.v1_msg, "type": err.v1_type}


def _none_error(loc: list[Any], kind: Kind, v2: bool) -> dict[str, Any]:
    if not v2:
        return {
            "loc": loc,
            "msg": "none is not an allowed value",
            "type": "type_error.none.not_allowed",
        }
    table = {
        Kind.STR: _STR_TYPE,
        Kind.INT: _INT_TYPE,
        Kind.FLOAT: _FLOAT_TYPE,
        Kind.BOOL: _BOOL_TYPE,
        Kind.LIST: _LIST_TYPE,
        Kind.LIST_STR: _LIST_TYPE,
        Kind.DICT: _DICT_TYPE,
    }
    return _error_item(loc, _Invalid(*table[kind]), None, True)


def validate_fields(
    data: dict[str, Any], fields: tuple[FieldSpec, ...], *, is_forge: bool, where: str = "body"
) -> dict[str, Any]:
    """Coerce `data` against `fields`; fill defaults; 422 listing every invalid field."""
    errors: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for spec in fields:
        if spec.name not in data:
            if spec.default is None and not spec.nullable:
                errors.append(_missing([where, spec.name], is_forge))
                continue
            result[spec.name] = _copy_default(spec.default)
            continue
        value = data[spec.name]
        loc: list[Any] = [where, spec.name]
        if value is None:
            if spec.nullable:
                result[spec.name] = None
            else:
                errors.append(_none_error(loc, spec.kind, is_forge))
            continue
        try:
            coerced = _coerce(spec.kind, value, is_forge)
        except _Invalid as exc:
            errors.append(_error_item(loc, exc, value, is_forge))
            continue
        if spec.kind is Kind.LIST_STR:
            for index, item in enumerate(coerced):
                try:
                    coerced[index] = _coerce(Kind.STR, item, is_forge)
                except _Invalid as exc:
                    errors.append(_error_item([*loc, index], exc, item, is_forge))
        result[spec.name] = coerced
    if errors:
        raise validation_error(errors)
    return result


def _copy_default(value: Any) -> Any:
    return value.copy() if isinstance(value, list | dict) else value


def _missing(loc: list[Any], v2: bool) -> dict[str, Any]:
    if v2:
        return {"type": "missing", "loc": loc, "msg": "Field required", "input": None}
    return {"loc": loc, "msg": "field required", "type": "value_error.missing"}


def parse_json_body(raw: bytes, *, is_forge: bool, model: bool = True) -> Any:
    """Decode a request body as FastAPI does for a required body parameter.

    An empty body is a missing field; broken JSON is a 422; with `model=True` (a pydantic
    model) or `model=False` (a plain `dict` parameter) a non-object is a 422 as well.
    """
    if not raw.strip():
        raise validation_error([_missing(["body"], is_forge)])
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        message = getattr(exc, "msg", str(exc))
        if is_forge:
            item: dict[str, Any] = {
                "type": "json_invalid",
                "loc": ["body", pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": message},
            }
        else:
            item = {"loc": ["body", pos], "msg": str(exc), "type": "value_error.jsondecode"}
        raise validation_error([item]) from None
    if not isinstance(data, dict):
        if not is_forge:
            item = {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}
        elif model:
            item = {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": data,
            }
        else:
            item = _error_item(["body"], _Invalid(*_DICT_TYPE), data, True)
        raise validation_error([item])
    return data


def validate_body(raw: bytes, fields: tuple[FieldSpec, ...], *, is_forge: bool) -> dict[str, Any]:
    """Parse and validate a JSON request body against a request model."""
    return validate_fields(parse_json_body(raw, is_forge=is_forge), fields, is_forge=is_forge)
