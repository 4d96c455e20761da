"""The documented `generation_params` of queue_app.extension_params: VAE, text encoders,
styles, the hires-fix fields and the servers' scripts, typed and range-checked.

`ExtensionParamsSerializer` is a base of queue_app.serializers.GenerationParamsSerializer:
its fields are declared here, apart from the basic ones. Ranges are those of the real
servers' UI (A1111 `modules/ui.py`, Forge's), so that what passes here is what a person
could set there.
"""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from core_app.fields import StrictCharField, StrictFloatField, StrictIntegerField
from queue_app.extension_params import ADETAILER_SCRIPT, CONTROLNET_SCRIPT

# At most this many always-on scripts, units of one, styles, text encoders: far beyond
# real use, and it bounds the work of a check.
MAX_SCRIPTS = 32
MAX_UNITS = 16
MAX_STYLES = 20
MAX_TEXT_ENCODERS = 4
MAX_SCRIPT_ARGS = 200


def _name(max_length: int = 500, **kwargs: Any) -> StrictCharField:
    return StrictCharField(max_length=max_length, **kwargs)


def _optional_text(max_length: int, **kwargs: Any) -> StrictCharField:
    return StrictCharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=max_length, **kwargs
    )


class AlwaysOnScriptSerializer(serializers.Serializer):
    """One always-on script: `{"args": [...]}`, the args in the script's own order (see
    the server's `/sdapi/v1/script-info`)."""

    args = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        max_length=MAX_SCRIPT_ARGS,
        help_text="The script's arguments, as its /sdapi/v1/script-info lists them; a "
        "ControlNet unit or an ADetailer unit is an object.",
    )


class ControlNetUnitSerializer(serializers.Serializer):
    """The keys of a ControlNet unit that MobileSD checks (the others go as sent)."""

    enabled = serializers.BooleanField(required=False)
    model = _name(required=False, allow_blank=True)
    module = _name(required=False, allow_blank=True)
    weight = StrictFloatField(required=False, min_value=0, max_value=2)
    guidance_start = StrictFloatField(required=False, min_value=0, max_value=1)
    guidance_end = StrictFloatField(required=False, min_value=0, max_value=1)
    processor_res = StrictIntegerField(required=False, min_value=-1, max_value=4096)


class ADetailerUnitSerializer(serializers.Serializer):
    """The keys of an ADetailer unit that MobileSD checks (the others go as sent)."""

    ad_model = _name(required=False)
    ad_confidence = StrictFloatField(required=False, min_value=0, max_value=1)
    ad_denoising_strength = StrictFloatField(required=False, min_value=0, max_value=1)
    ad_steps = StrictIntegerField(required=False, min_value=1, max_value=150)
    ad_cfg_scale = StrictFloatField(required=False, min_value=0, max_value=30)


_UNIT_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    CONTROLNET_SCRIPT: ControlNetUnitSerializer,
    ADETAILER_SCRIPT: ADetailerUnitSerializer,
}


class AlwaysOnScriptsField(serializers.DictField):
    """`{"<script title>": {"args": [...]}}`; ControlNet and ADetailer units checked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=AlwaysOnScriptSerializer(), **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            self.fail("not_a_dict", input_type=type(data).__name__)
        if len(data) > MAX_SCRIPTS:
            raise serializers.ValidationError(f"At most {MAX_SCRIPTS} always-on scripts.")
        errors: dict[str, Any] = {}
        for title, value in data.items():
            if not str(title).strip():
                errors[str(title)] = ["A script title must not be empty."]
                continue
            if not isinstance(value, Mapping):
                errors[str(title)] = ['Must be an object such as {"args": [...]}.']
                continue
            script = AlwaysOnScriptSerializer(data=value)
            if not script.is_valid():
                errors[str(title)] = script.errors
                continue
            unit_errors = _unit_errors(str(title), value.get("args") or [])
            if unit_errors:
                errors[str(title)] = {"args": unit_errors}
        if errors:
            raise serializers.ValidationError(errors)
        # As sent: the args' own values (and keys beyond the checked ones) are the script's.
        return dict(data)


def _unit_errors(title: str, args: list[Any]) -> dict[str, Any]:
    serializer_class = _UNIT_SERIALIZERS.get(title.strip().casefold())
    if serializer_class is None:
        return {}
    units = [arg for arg in args if isinstance(arg, Mapping)]
    if len(units) > MAX_UNITS:
        return {"non_field_errors": [f"At most {MAX_UNITS} units."]}
    errors: dict[str, Any] = {}
    for index, arg in enumerate(args):
        if isinstance(arg, Mapping):
            unit = serializer_class(data=arg)
            if not unit.is_valid():
                errors[str(index)] = unit.errors
    return errors


class ExtensionParamsSerializer(serializers.Serializer):
    """The fields of issue 16 point 4 (VAE, modules, styles, hires fix) and point 3
    (scripts). Every one is optional; see queue_app.extension_params for what is sent."""

    vae = _optional_text(
        500,
        help_text="A VAE file of the server (its /sdapi/v1/sd-vae, Forge's /sdapi/v1/sd-modules), "
        'or "Automatic" / "None" (A1111). Forge: sent as forge_additional_modules.',
    )
    text_encoders = serializers.ListField(
        child=_name(),
        required=False,
        max_length=MAX_TEXT_ENCODERS,
        help_text="Forge only: text-encoder modules (Flux: clip_l, t5xxl) of its "
        "/sdapi/v1/sd-modules, sent in forge_additional_modules with the VAE.",
    )
    styles = serializers.ListField(
        child=_name(200),
        required=False,
        max_length=MAX_STYLES,
        help_text="Prompt styles of the server's /sdapi/v1/prompt-styles, by name.",
    )
    hires_scale = StrictFloatField(
        required=False, min_value=1, max_value=4, help_text="Older name of hr_scale."
    )
    hires_steps = StrictIntegerField(
        required=False, min_value=0, max_value=150, help_text="Older name of hr_second_pass_steps."
    )
    hr_scale = StrictFloatField(
        required=False, min_value=1, max_value=4, help_text="Hires fix: upscale by (1-4)."
    )
    hr_upscaler = _optional_text(
        200,
        help_text="Hires fix: an upscaler of the server (/sdapi/v1/upscalers, or a latent mode); "
        '"None": the server\'s default. Wins over upscaler_model.',
    )
    hr_second_pass_steps = StrictIntegerField(
        required=False, min_value=0, max_value=150, help_text="Hires steps; 0: the same as steps."
    )
    hr_denoising_strength = StrictFloatField(
        required=False, min_value=0, max_value=1, help_text="Hires fix: denoising (default 0.7)."
    )
    hr_resize_x = StrictIntegerField(
        required=False, min_value=0, max_value=8192, help_text="Hires fix: resize width to."
    )
    hr_resize_y = StrictIntegerField(
        required=False, min_value=0, max_value=8192, help_text="Hires fix: resize height to."
    )
    hr_sampler_name = _optional_text(200, help_text="Hires pass sampler (empty: the same).")
    hr_scheduler = _optional_text(200, help_text="Hires pass scheduler (empty: the same).")
    hr_prompt = _optional_text(100_000, help_text="Hires pass prompt (empty: the same).")
    hr_negative_prompt = _optional_text(100_000, help_text="Hires pass negative prompt.")
    hr_cfg = StrictFloatField(
        required=False, min_value=1, max_value=30, help_text="Hires pass CFG."
    )
    hr_distilled_cfg = StrictFloatField(
        required=False, min_value=0, max_value=30, help_text="Forge: hires pass distilled CFG."
    )
    alwayson_scripts = AlwaysOnScriptsField(
        required=False,
        help_text='Always-on scripts by title: {"ControlNet": {"args": [unit, ...]}, '
        '"ADetailer": {"args": [true, false, {"ad_model": "face_yolov8n.pt"}]}}; sent as '
        "given, checked against the server's /sdapi/v1/script-info (and ControlNet models "
        "against its /controlnet/model_list).",
    )
    script_name = _optional_text(
        200, help_text="A selectable script of the server (/sdapi/v1/scripts), e.g. 'x/y/z plot'."
    )
    script_args = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        max_length=MAX_SCRIPT_ARGS,
        help_text="The selectable script's arguments.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs.get("script_args") and not str(attrs.get("script_name") or "").strip():
            raise serializers.ValidationError({"script_args": ["Needs script_name."]})
        return attrs
