"""Generation servers: the Forge / AUTOMATIC1111 machines jobs run on."""

from datetime import timedelta

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from servers_app.validators import (
    normalise_models_dir,
    validate_alias,
    validate_api_url,
    validate_models_dir,
    validate_username,
)

# Migration 0003 names the validator by this module.
__all__ = ["CachedModel", "ModelKind", "Server", "ServerPerformance", "validate_models_dir"]


class Server(models.Model):
    """A Forge / A1111 server, addressed by its alias in the API.

    The password is kept as given, because MobileSD must send it to the server; the API
    never returns it. Health fields are written by workers only.
    """

    alias = models.CharField(max_length=100, unique=True, validators=[validate_alias])
    api_url = models.CharField(max_length=500, validators=[validate_api_url])
    username = models.CharField(
        max_length=150, blank=True, default="", validators=[validate_username]
    )
    password = models.CharField(max_length=255, blank=True, default="")
    enabled = models.BooleanField(default=True)
    slots = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    # Where this server's `models` folder is reachable from MobileSD (a mount such as
    # /mnt/gpu-box/models); Civitai downloads go below it. Blank: no downloads to it.
    models_dir = models.CharField(
        max_length=1000,
        blank=True,
        default="",
        validators=[validate_models_dir],
        help_text="Where this server's models folder is reachable from MobileSD, e.g. "
        "/mnt/gpu-box/models. Civitai downloads go below it; blank = no downloads.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Health, written by workers.
    is_online = models.BooleanField(null=True, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)
    loaded_checkpoint = models.CharField(max_length=500, blank=True, default="", editable=False)
    # "forge" or "a1111", detected from the server's options; "" until first seen.
    flavour = models.CharField(max_length=16, blank=True, default="", editable=False)
    # The model cache (CachedModel rows) was last refreshed then; `models_stale` says the
    # last attempt failed and the rows are the last good list.
    models_refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    models_stale = models.BooleanField(default=False, editable=False)
    models_error = models.TextField(blank=True, default="", editable=False)
    # The extension lists (ModelKind values beyond checkpoint and LoRA) the server answered
    # at the last refresh: a kind missing here is a list the server does not have (A1111
    # has no /sd-modules, a server without ControlNet no /controlnet/model_list), so its
    # absence from the cache says nothing about what a job may name.
    listed_kinds = models.JSONField(default=list, blank=True, editable=False)
    # The server's own values of the VAE settings MobileSD's jobs change (A1111 `sd_vae`,
    # Forge `forge_additional_modules`), read from its options before the first job that
    # changed each one: a job naming no VAE sends them back (queue_app.engine). Empty:
    # MobileSD never changed them, and a job naming no VAE sends nothing.
    vae_baseline = models.JSONField(default=dict, blank=True, editable=False)
    # Paused by an admin since then (null: not paused): the running job finishes, no new
    # one starts here (queue_app.dispatch reads it in the claim and the reserved start).
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Quarantine (servers_app.quarantine), written by workers: how many of its jobs failed
    # in a row for server-side reasons, and since when (and why) it takes no jobs.
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    quarantined_at = models.DateTimeField(null=True, blank=True, editable=False)
    quarantine_reason = models.TextField(blank=True, default="", editable=False)

    class Meta:
        ordering = ["alias"]
        constraints = [
            models.CheckConstraint(condition=models.Q(slots__gte=1), name="server_slots_gte_1"),
        ]

    def __str__(self) -> str:
        return self.alias

    def clean(self) -> None:
        # After the field validators: the folder is stored in one spelling.
        self.models_dir = normalise_models_dir(self.models_dir)

    @property
    def has_password(self) -> bool:
        return bool(self.password)

    @property
    def quarantine(self) -> dict[str, object] | None:
        """Why and since when the server is quarantined (None: it is not), and when its
        probe may bring it back."""
        if self.quarantined_at is None:
            return None
        cooldown = timedelta(seconds=settings.MOBILESD_QUARANTINE_COOLDOWN_SECONDS)
        return {
            "since": self.quarantined_at,
            "reason": self.quarantine_reason,
            "probe_after": self.quarantined_at + cooldown,
        }

    @property
    def state(self) -> str:
        """disabled, online, offline, quarantined, or unknown (never checked yet), as the
        operator sees it."""
        if not self.enabled:
            return "disabled"
        if self.quarantined_at is not None:
            return "quarantined"
        if self.is_online is None:
            return "unknown"
        return "online" if self.is_online else "offline"


class ModelKind(models.TextChoices):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    # The server's other lists (servers_app.extension_cache), cached and refreshed with its
    # models: A1111's VAEs (/sd-vae), Forge's VAE / text-encoder modules (/sd-modules), the
    # hires upscalers (/upscalers and the latent modes), the prompt styles, the scripts
    # (/scripts with /script-info) and the ControlNet extension's models.
    VAE = "vae"
    MODULE = "module"
    UPSCALER = "upscaler"
    STYLE = "style"
    SCRIPT = "script"
    CONTROLNET_MODEL = "controlnet_model"


class CachedModel(models.Model):
    """A checkpoint or LoRA that a server listed (sd-models / loras), as last refreshed.

    `relative_path` is the path below the server's model folder with the server's own
    separator (`Pony\\x.safetensors` on Windows); `lookup_key` is its comparable form
    (servers_app.checkpoints.checkpoint_key); `identity` groups the same file across
    servers (its SHA-256 when known, else its lookup key).
    """

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="cached_models")
    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    title = models.CharField(max_length=1000)
    name = models.CharField(max_length=500)
    model_name = models.CharField(max_length=500, blank=True, default="")
    relative_path = models.CharField(max_length=1000)
    filename = models.CharField(max_length=2000, blank=True, default="")
    short_hash = models.CharField(max_length=12, blank=True, default="", db_index=True)
    sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    config = models.CharField(max_length=2000, blank=True, default="")
    alias = models.CharField(max_length=500, blank=True, default="")
    base_model = models.CharField(max_length=200, blank=True, default="")
    trigger_words = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    lookup_key = models.CharField(max_length=1000, db_index=True)
    stem_key = models.CharField(max_length=500, db_index=True)
    identity = models.CharField(max_length=1000)
    # What an "any" job's `requirement_keys` match (servers_app.extension_cache
    # requirement_key): "file:<stem>" for a VAE or module, "script:<mode>:<name>", ... ; "" for
    # checkpoints and LoRAs, which the claim matches by their own keys.
    requirement_key = models.CharField(max_length=600, blank=True, default="")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name", "server"]
        indexes = [
            models.Index(fields=["kind", "identity"], name="cachedmodel_kind_identity"),
            models.Index(fields=["kind", "name"], name="cachedmodel_kind_name"),
            models.Index(fields=["server", "requirement_key"], name="cachedmodel_requirement"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["server", "kind", "relative_path"], name="cachedmodel_unique_path"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.kind} on {self.server_id})"


class ServerPerformance(models.Model):
    """How fast a server has been, as MobileSD measured it: seconds per sampling step at
    each job shape, and the seconds each checkpoint took to load there (see
    servers_app.performance). A row of its own, so that recording a measurement never
    locks the Server row a claim locks."""

    server = models.OneToOneField(
        Server, primary_key=True, on_delete=models.CASCADE, related_name="performance"
    )
    # {"<shape>": {"mean": seconds per step-image, "n": jobs measured}}; a shape is
    # "WxH" or "WxH hr S" (servers_app.performance.Work.shape).
    step_seconds = models.JSONField(default=dict, blank=True, editable=False)
    # {"<checkpoint key>": {"mean": seconds, "n": loads measured}}.
    load_seconds = models.JSONField(default=dict, blank=True, editable=False)
    jobs_measured = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["server"]

    def __str__(self) -> str:
        return f"performance of {self.server_id}"
