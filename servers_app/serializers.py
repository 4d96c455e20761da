"""API shapes of servers."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from core_app.fields import TimestampField
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.validators import validate_alias, validate_api_url, validate_username


class QuarantineSerializer(serializers.Serializer):
    """Why and since when a server takes no jobs (servers_app.quarantine)."""

    since = TimestampField()
    reason = serializers.CharField(read_only=True)
    probe_after = TimestampField(
        help_text="From then on, a health check that succeeds brings the server back."
    )


class ServerSerializer(serializers.ModelSerializer):
    """A server as the API shows it. The password is write-only; `has_password` says if set.

    Input also accepts the names the original MobileSD used: `apiUrl`,
    `auth: {"username", "password"}` (or `null` for none), and `authUser` / `authPass`;
    output shows `apiUrl` and `authUser` too. An update that leaves the credentials out
    keeps them while the URL's origin (scheme, host, port) stays; a new origin without a
    password clears the stored one (the answer's message says so). `authUser` sent back
    with an empty `authPass` keeps the password; `auth: null` or an empty username clears
    both.
    """

    alias = serializers.CharField(
        max_length=100,
        validators=[
            validate_alias,
            UniqueValidator(Server.objects.all(), message="A server with this alias exists."),
        ],
    )
    api_url = serializers.CharField(max_length=500, validators=[validate_api_url])
    apiUrl = serializers.CharField(source="api_url", read_only=True, help_text="Legacy name.")
    username = serializers.CharField(
        max_length=150, required=False, allow_blank=True, validators=[validate_username]
    )
    authUser = serializers.CharField(source="username", read_only=True, help_text="Legacy name.")
    password = serializers.CharField(
        max_length=255, required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    has_password = serializers.BooleanField(read_only=True)
    slots = serializers.IntegerField(min_value=1, max_value=16, required=False)
    created_at = TimestampField()
    updated_at = TimestampField()
    last_checked_at = TimestampField(allow_null=True, help_text="null: never checked yet.")
    last_seen_at = TimestampField(allow_null=True, help_text="null: never answered yet.")
    paused = serializers.SerializerMethodField(
        help_text="Paused by an admin (POST .../pause): the running job finishes, no new one "
        "starts here."
    )
    paused_at = TimestampField(allow_null=True, read_only=True, help_text="null: not paused.")
    quarantine = QuarantineSerializer(
        read_only=True,
        allow_null=True,
        help_text="null unless the server is quarantined: after "
        "MOBILESD_QUARANTINE_AFTER_FAILURES server-side failures of its jobs in a row it "
        'takes no jobs (pinned ones wait, "any" ones go elsewhere) until a health check '
        "after the cooldown succeeds.",
    )
    consecutive_failures = serializers.IntegerField(
        read_only=True, help_text="Its jobs' server-side failures since the last success."
    )

    class Meta:
        model = Server
        fields = [
            "alias",
            "api_url",
            "apiUrl",
            "username",
            "authUser",
            "password",
            "has_password",
            "enabled",
            "slots",
            "models_dir",
            "is_online",
            "last_checked_at",
            "last_seen_at",
            "last_error",
            "loaded_checkpoint",
            "paused",
            "paused_at",
            "quarantine",
            "consecutive_failures",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["is_online", "last_error", "loaded_checkpoint"]

    def get_paused(self, server: Server) -> bool:
        return server.paused_at is not None

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            data = self._accept_legacy_names(data)
        return super().to_internal_value(data)

    @staticmethod
    def _accept_legacy_names(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        if "api_url" not in data and "apiUrl" in data:
            data["api_url"] = data.pop("apiUrl")
        if "auth" in data:
            auth = data.pop("auth")
            if auth is None:
                data.setdefault("username", "")
                data.setdefault("password", "")
            elif isinstance(auth, dict):
                for key in ("username", "password"):
                    if key in auth:
                        data.setdefault(key, auth[key])
            else:
                raise serializers.ValidationError(
                    {"auth": ["Expected an object with 'username' and 'password', or null."]}
                )
        if "authUser" in data:
            data.setdefault("username", data.pop("authUser"))
        if "authPass" in data:
            data.setdefault("password", data.pop("authPass"))
        for key in ("username", "password"):
            if key in data and data[key] is None:
                data[key] = ""
        return data


class ServerEnvelopeSerializer(serializers.Serializer):
    """`{"message", "server"}`: what create and update answer, as the original did."""

    message = serializers.CharField()
    server = ServerSerializer()


class ModelServerSerializer(serializers.Serializer):
    """Where a model is: the server, and the model's title and path there."""

    alias = serializers.CharField(source="server.alias")
    title = serializers.CharField()
    path = serializers.CharField(source="relative_path")
    stale = serializers.BooleanField(source="server.models_stale")


FILENAME_HELP = "The file name, with its extension (the original MobileSD's name)."
RELATIVE_PATH_HELP = (
    "The folder below the models folder, with '/', '.' at the top (the original MobileSD's "
    "name). `relativePath + '/' + filename` is a valid checkpoint_name on every server listed."
)


class CheckpointSerializer(serializers.Serializer):
    title = serializers.CharField(help_text="Its title on the first server that has it.")
    name = serializers.CharField(help_text="The file name without extension.")
    path = serializers.CharField(help_text="The path below the models folder, with '/'.")
    filename = serializers.CharField(help_text=FILENAME_HELP)
    relativePath = serializers.CharField(help_text=RELATIVE_PATH_HELP)
    hash = serializers.CharField(allow_null=True, help_text="Short hash (AutoV2), once known.")
    sha256 = serializers.CharField(allow_null=True)
    servers = ModelServerSerializer(many=True)


class LoraSerializer(serializers.Serializer):
    name = serializers.CharField()
    alias = serializers.CharField()
    path = serializers.CharField()
    filename = serializers.CharField(help_text=FILENAME_HELP)
    relativePath = serializers.CharField(
        help_text="The folder below the LoRA folder, with '/', '.' at the top."
    )
    name_for_prompt = serializers.CharField(
        help_text="What goes in `<lora:NAME:weight>`: the name the server lists (file stem)."
    )
    hash = serializers.CharField(allow_null=True)
    base_model = serializers.CharField(allow_blank=True)
    trigger_words = serializers.ListField(child=serializers.CharField())
    servers = ModelServerSerializer(many=True)


def model_group_data(rows: list[CachedModel]) -> dict[str, Any]:
    """The API entry of one model from its rows on every server that has it."""
    first = rows[0]
    known_sha = next((row.sha256 for row in rows if row.sha256), "")
    known_short = next((row.short_hash for row in rows if row.short_hash), "")
    path = first.relative_path.replace("\\", "/")
    folder, _, filename = path.rpartition("/")
    data: dict[str, Any] = {
        "name": first.name,
        "path": path,
        "filename": filename,
        "relativePath": folder or ".",
        "hash": known_short or (known_sha[:10] if known_sha else None),
        "servers": ModelServerSerializer(rows, many=True).data,
    }
    if first.kind == ModelKind.CHECKPOINT:
        return {"title": first.title, **data, "sha256": known_sha or None}
    return {
        **data,
        "alias": first.alias,
        "name_for_prompt": first.name,
        "base_model": first.base_model,
        "trigger_words": first.trigger_words,
    }


class RefreshResultSerializer(serializers.Serializer):
    message = serializers.CharField()
    checkpoints = serializers.IntegerField()
    loras = serializers.IntegerField()
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    updated = serializers.IntegerField()


# --- the extension lists (servers_app.extension_cache) --------------------------------------


class ListedFileSerializer(serializers.Serializer):
    """A VAE (A1111's /sdapi/v1/sd-vae) or module (Forge's /sdapi/v1/sd-modules)."""

    name = serializers.CharField(source="title", help_text="What `vae` / `text_encoders` take.")
    filename = serializers.CharField(help_text="The file on the server.")
    folder = serializers.SerializerMethodField(help_text="Its folder: VAE, text_encoder, ...")

    def get_folder(self, row: Any) -> str:
        return str((row.metadata or {}).get("folder", ""))


class ListedUpscalerSerializer(serializers.Serializer):
    name = serializers.CharField(source="title", help_text="What `hr_upscaler` takes.")
    latent = serializers.SerializerMethodField(help_text="A latent upscale mode.")
    scale = serializers.SerializerMethodField()

    def get_latent(self, row: Any) -> bool:
        return bool((row.metadata or {}).get("latent"))

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_scale(self, row: Any) -> float | None:
        scale = (row.metadata or {}).get("scale")
        return float(scale) if isinstance(scale, int | float) else None


class ListedStyleSerializer(serializers.Serializer):
    name = serializers.CharField(source="title", help_text="What `styles` takes.")
    prompt = serializers.SerializerMethodField()
    negative_prompt = serializers.SerializerMethodField()

    def get_prompt(self, row: Any) -> str:
        return str((row.metadata or {}).get("prompt") or "")

    def get_negative_prompt(self, row: Any) -> str:
        return str((row.metadata or {}).get("negative_prompt") or "")


class ListedScriptSerializer(serializers.Serializer):
    name = serializers.CharField(
        source="title", help_text="Its title: an `alwayson_scripts` key or a `script_name`."
    )
    alwayson = serializers.SerializerMethodField(
        help_text="Always-on (goes in alwayson_scripts) or selectable (script_name); null: "
        "the server did not say."
    )
    modes = serializers.SerializerMethodField(help_text="txt2img, img2img.")
    args = serializers.SerializerMethodField(
        help_text="Its arguments per mode, as /sdapi/v1/script-info lists them (label, value, "
        "minimum, maximum, choices)."
    )

    @extend_schema_field(serializers.BooleanField(allow_null=True))
    def get_alwayson(self, row: Any) -> bool | None:
        value = (row.metadata or {}).get("alwayson")
        return value if isinstance(value, bool) else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_modes(self, row: Any) -> list[str]:
        return list((row.metadata or {}).get("modes") or [])

    @extend_schema_field(serializers.DictField())
    def get_args(self, row: Any) -> dict[str, Any]:
        return dict((row.metadata or {}).get("args") or {})


class ListedNameSerializer(serializers.Serializer):
    name = serializers.CharField(
        source="title", help_text="What a ControlNet unit's `model` takes."
    )


class ServerListsSerializer(serializers.Serializer):
    """A server's cached lists beyond checkpoints and LoRAs, refreshed with its models."""

    server = serializers.CharField(help_text="The server's alias.")
    refreshed_at = TimestampField(allow_null=True, help_text="When its lists were last read.")
    stale = serializers.BooleanField(help_text="The last refresh failed; these are older.")
    listed = serializers.ListField(
        child=serializers.CharField(),
        help_text="The lists the server gave at that refresh (vae, module, upscaler, style, "
        "script, controlnet_model); a job is checked only against these.",
    )
    vaes = ListedFileSerializer(many=True)
    modules = ListedFileSerializer(many=True, help_text="Forge: VAEs and text encoders.")
    upscalers = ListedUpscalerSerializer(many=True)
    styles = ListedStyleSerializer(many=True)
    scripts = ListedScriptSerializer(many=True)
    controlnet_models = ListedNameSerializer(many=True)
