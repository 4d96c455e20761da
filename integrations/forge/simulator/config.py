"""Configuration of a simulated Forge / A1111 server (plain dataclasses, no Django)."""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

Flavour = Literal["forge-2", "a1111-1.10"]
FLAVOURS: tuple[str, ...] = get_args(Flavour)

# `git describe` strings the real servers put in `info.version` and the infotext.
VERSIONS: dict[str, str] = {
    "forge-2": "f2.0.1v1.10.1-previous-669-gdfdcbab6",
    "a1111-1.10": "v1.10.1",
}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _derived_hex(*parts: str) -> str:
    """A stable fake digest standing in for hashing a file we do not have."""
    return hashlib.sha256("\x00".join(("mobilesd-simulator", *parts)).encode()).hexdigest()


def _check_relative(name: str, what: str) -> None:
    if not name or name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/"):
        raise ValueError(f"{what} name must be a relative path using '/': {name!r}")


@dataclass(frozen=True)
class SimModel:
    """A checkpoint file on the simulated server's disk.

    `name` is the path below `models/Stable-diffusion`, always written with `/`; the server
    shows it with its own separator. `sha256` is the full-file SHA-256 (derived from the name
    when omitted); `autov1` is the legacy 8-hex "model hash" (derived when omitted).
    """

    name: str
    sha256: str | None = None
    autov1: str | None = None
    config: str | None = None

    def __post_init__(self) -> None:
        _check_relative(self.name, "model")
        digest = (self.sha256 or _derived_hex("checkpoint", self.name)).lower()
        if not _HEX64.match(digest):
            raise ValueError(f"sha256 of {self.name!r} must be 64 hex digits")
        object.__setattr__(self, "sha256", digest)
        old = (self.autov1 or _derived_hex("autov1", self.name)[:8]).lower()
        object.__setattr__(self, "autov1", old)

    @property
    def digest(self) -> str:
        """The SHA-256 (never None after construction)."""
        assert self.sha256 is not None
        return self.sha256


@dataclass(frozen=True)
class SimLora:
    """A LoRA file below `models/Lora` (name with `/`), with kohya-style metadata.

    `sha256` is the full-file hash (Forge writes its first 12 hex as the `Lora hashes` value),
    `addnet_hash` the kohya hash of the tensor data (A1111 writes its first 12 hex).
    """

    name: str
    sha256: str | None = None
    addnet_hash: str | None = None
    output_name: str | None = None
    base_model_version: str = "sdxl_base_v1-0"
    tag_frequency: Mapping[str, Mapping[str, int]] | None = None

    def __post_init__(self) -> None:
        _check_relative(self.name, "LoRA")
        for attr, kind in (("sha256", "lora"), ("addnet_hash", "addnet")):
            value = (getattr(self, attr) or _derived_hex(kind, self.name)).lower()
            if not _HEX64.match(value):
                raise ValueError(f"{attr} of {self.name!r} must be 64 hex digits")
            object.__setattr__(self, attr, value)

    @property
    def stem(self) -> str:
        """File name without folder and extension (the LoRA's `name` in the API)."""
        return posixpath.splitext(posixpath.basename(self.name))[0]


DEFAULT_MODELS: tuple[SimModel, ...] = (
    SimModel("sd_xl_base_1.0.safetensors"),
    SimModel("Pony/cyberrealisticPony_v8.safetensors"),
    SimModel("SD15/realisticVisionV60B1_v51VAE.safetensors"),
    SimModel("Flux/flux1-dev-bnb-nf4-v2.safetensors"),
)

DEFAULT_LORAS: tuple[SimLora, ...] = (
    SimLora(
        "add_detail.safetensors",
        base_model_version="sd_v1",
        tag_frequency={"10_detail": {"detailed": 40, "intricate": 12}},
    ),
    SimLora(
        "Pony/Smooth Pony Booster.safetensors",
        output_name="Smooth Pony Booster",
        tag_frequency={"5_smooth": {"score_9": 30, "smooth": 25}},
    ),
    SimLora("xl_more_art-full_v1.safetensors", output_name="xl_more_art-full"),
)

DEFAULT_EMBEDDINGS: tuple[str, ...] = ("easynegative", "SmoothNegativePony-neg")

# Relative to `<install_dir>/models`. Forge lists them in /sd-modules, A1111 the VAE/ ones in
# /sd-vae.
DEFAULT_MODULES: tuple[str, ...] = (
    "VAE/sdxl_vae.safetensors",
    "VAE/ae.safetensors",
    "text_encoder/clip_l.safetensors",
    "text_encoder/t5xxl_fp8_e4m3fn.safetensors",
)

# Titles (lower case) accepted as `alwayson_scripts` keys; anything else is a 422 as on a server.
BUILTIN_ALWAYSON_SCRIPTS: tuple[str, ...] = (
    "refiner",
    "seed",
    "sampler",
    "hypertile",
    "extra options",
)
FORGE_ALWAYSON_SCRIPTS: tuple[str, ...] = (
    "controlnet",
    "freeu integrated (sd 1.x, sd 2.x, sdxl)",
    "dynamic thresholding (cfg-fix) integrated",
    "never oom integrated",
)


# Selectable scripts (`script_name`) of a fresh install, by mode (lower-case titles, as
# `/sdapi/v1/scripts` lists them).
SELECTABLE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "txt2img": ("prompt matrix", "prompts from file or textbox", "x/y/z plot"),
    "img2img": (
        "img2img alternative test",
        "loopback",
        "outpainting mk2",
        "poor man's outpainting",
        "prompt matrix",
        "prompts from file or textbox",
        "sd upscale",
        "x/y/z plot",
    ),
}
CONTROLNET_TITLE = "controlnet"
ADETAILER_TITLE = "adetailer"

# What ControlNet's /controlnet/model_list answers by default (name and short hash).
DEFAULT_CONTROLNET_MODELS: tuple[str, ...] = (
    "control_v11p_sd15_canny [d14c016b]",
    "control_v11f1p_sd15_depth [cfd03158]",
    "diffusers_xl_canny_mid [112a778d]",
)
# ADetailer's detection models (/adetailer/v1/ad_model).
DEFAULT_ADETAILER_MODELS: tuple[str, ...] = (
    "face_yolov8n.pt",
    "face_yolov8s.pt",
    "hand_yolov8n.pt",
    "person_yolov8n-seg.pt",
    "mediapipe_face_full",
)


@dataclass(frozen=True)
class SimStyle:
    """A saved prompt style (styles.csv): its name and the prompts it adds."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


DEFAULT_STYLES: tuple[SimStyle, ...] = (
    SimStyle("Cinematic", "cinematic still of {prompt}, shallow depth of field", "cartoon"),
    SimStyle("Watercolor", "watercolor painting, {prompt}", "photo, 3d"),
)


@dataclass
class SimulatorConfig:
    """Everything that a real server would take from its command line and its disk.

    `path_separator` is the server OS separator: `\\` makes checkpoint names and file paths
    Windows-like (`C:\\sd\\models\\...`), `/` Linux-like (`/opt/sd/models/...`).
    `webui=False` is `--nowebui`: no `/internal/*` and no `/app_id`.
    `auth_users` is `--api-auth`. `no_hashing` is `--no-hashing` (titles never gain a hash).
    `initial_checkpoint` is the `sd_model_checkpoint` option at first start (default: first model).
    `seconds_per_step` and `checkpoint_switch_seconds` are read at every job, so they may be
    changed while the simulator runs; the other fields are fixed once it has started.
    """

    flavour: Flavour = "forge-2"
    path_separator: str = "/"
    models: list[SimModel] = field(default_factory=lambda: list(DEFAULT_MODELS))
    loras: list[SimLora] = field(default_factory=lambda: list(DEFAULT_LORAS))
    embeddings: list[str] = field(default_factory=lambda: list(DEFAULT_EMBEDDINGS))
    modules: list[str] = field(default_factory=lambda: list(DEFAULT_MODULES))
    seconds_per_step: float = 0.0
    checkpoint_switch_seconds: float = 0.0
    auth_users: dict[str, str] | None = None
    webui: bool = True
    port: int = 0
    host: str = "127.0.0.1"
    install_dir: str | None = None
    no_hashing: bool = False
    initial_checkpoint: str | None = None
    # Extensions: ControlNet (None: as installed, built into Forge, absent from a fresh
    # A1111) with its models, ADetailer (an extension of both; absent by default), and
    # the prompt styles of styles.csv.
    controlnet: bool | None = None
    controlnet_models: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLNET_MODELS))
    adetailer: bool = False
    adetailer_models: list[str] = field(default_factory=lambda: list(DEFAULT_ADETAILER_MODELS))
    styles: list[SimStyle] = field(default_factory=lambda: list(DEFAULT_STYLES))

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {self.flavour!r}")
        if self.path_separator not in ("/", "\\"):
            raise ValueError("path_separator must be '/' or '\\'")
        if self.seconds_per_step < 0 or self.checkpoint_switch_seconds < 0:
            raise ValueError("durations must not be negative")
        if self.install_dir is None:
            self.install_dir = "C:\\sd" if self.path_separator == "\\" else "/opt/sd"
        self.models = list(self.models)
        self.loras = list(self.loras)

    @property
    def is_forge(self) -> bool:
        return self.flavour == "forge-2"

    @property
    def has_controlnet(self) -> bool:
        return self.is_forge if self.controlnet is None else self.controlnet

    def alwayson_scripts(self) -> tuple[str, ...]:
        """The always-on scripts' titles (lower case), in the order the server runs them."""
        titles = list(BUILTIN_ALWAYSON_SCRIPTS)
        if self.is_forge:
            titles += [t for t in FORGE_ALWAYSON_SCRIPTS if t != CONTROLNET_TITLE]
        if self.has_controlnet:
            titles.append(CONTROLNET_TITLE)
        if self.adetailer:
            titles.append(ADETAILER_TITLE)
        return tuple(titles)

    def selectable_scripts(self, mode: str) -> tuple[str, ...]:
        return SELECTABLE_SCRIPTS.get(mode, ())

    @property
    def version(self) -> str:
        return VERSIONS[self.flavour]

    def server_path(self, *parts: str) -> str:
        """An absolute path on the simulated server, below `install_dir`, with its separator."""
        sep = self.path_separator
        pieces = [str(self.install_dir).rstrip("/\\")]
        for part in parts:
            pieces.extend(p for p in re.split(r"[/\\]", part) if p)
        return sep.join(pieces)

    def server_name(self, relative: str) -> str:
        """A relative name (`Pony/x.safetensors`) as the server shows it (its separator)."""
        return relative.replace("/", self.path_separator)
