"""Static lists a Forge / A1111 server reports, and sampler/scheduler normalisation (A.6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": list(self.aliases), "options": dict(self.options)}


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    aliases: tuple[str, ...] | None = None
    default_rho: float = -1.0
    need_inner_model: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "aliases": list(self.aliases) if self.aliases is not None else None,
            "default_rho": self.default_rho,
            "need_inner_model": self.need_inner_model,
        }


_KARRAS = {"scheduler": "karras"}
_EXPONENTIAL = {"scheduler": "exponential"}

# A1111 1.10 order; the first entry is what an unknown sampler name falls back to.
A1111_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), _KARRAS),
    Sampler(
        "DPM++ SDE", ("k_dpmpp_sde",), {**_KARRAS, "second_order": True, "brownian_noise": True}
    ),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), {**_EXPONENTIAL, "brownian_noise": True}),
    Sampler(
        "DPM++ 2M SDE Heun",
        ("k_dpmpp_2m_sde_heun",),
        {**_EXPONENTIAL, "brownian_noise": True, "solver_type": "heun"},
    ),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), {**_KARRAS, "uses_ensd": True, "second_order": True}),
    Sampler(
        "DPM++ 3M SDE",
        ("k_dpmpp_3m_sde",),
        {**_EXPONENTIAL, "discard_next_to_last_sigma": True, "brownian_noise": True},
    ),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), {"uses_ensd": True}),
    Sampler("Euler", ("k_euler",)),
    Sampler("LMS", ("k_lms",)),
    Sampler("Heun", ("k_heun",), {"second_order": True}),
    Sampler(
        "DPM2", ("k_dpm_2",), {**_KARRAS, "discard_next_to_last_sigma": True, "second_order": True}
    ),
    Sampler(
        "DPM2 a",
        ("k_dpm_2_a",),
        {**_KARRAS, "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True},
    ),
    Sampler("DPM fast", ("k_dpm_fast",), {"uses_ensd": True}),
    Sampler("DPM adaptive", ("k_dpm_ad",), {"uses_ensd": True}),
    Sampler("Restart", ("restart",), {**_KARRAS, "second_order": True}),
    Sampler("DDIM", ("ddim",)),
    Sampler("DDIM CFG++", ("ddim_cfgpp",)),
    Sampler("PLMS", ("plms",)),
    Sampler("UniPC", ("unipc",)),
    Sampler("LCM", ("k_lcm",)),
)

FORGE_EXTRA_SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler a CFG++", ("k_euler_a_cfg_pp",), {"uses_ensd": True}),
    Sampler("Euler CFG++", ("k_euler_cfg_pp",)),
    Sampler("DPM++ 2M CFG++", ("k_dpmpp_2m_cfg_pp",), _KARRAS),
    Sampler("HeunPP2", ("heunpp2",), {"second_order": True}),
    Sampler("IPNDM", ("ipndm",)),
    Sampler("IPNDM_V", ("ipndm_v",)),
    Sampler("DEIS", ("deis",)),
    Sampler("DDPM", ("ddpm",)),
)

A1111_SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic"),
    Scheduler("uniform", "Uniform", need_inner_model=True),
    Scheduler("karras", "Karras", default_rho=7.0),
    Scheduler("exponential", "Exponential"),
    Scheduler("polyexponential", "Polyexponential", default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    Scheduler("kl_optimal", "KL Optimal"),
    Scheduler("align_your_steps", "Align Your Steps"),
    Scheduler("simple", "Simple"),
    Scheduler("normal", "Normal", need_inner_model=True),
    Scheduler("ddim", "DDIM", need_inner_model=True),
    Scheduler("beta", "Beta"),
)

FORGE_EXTRA_SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("turbo", "Turbo", need_inner_model=True),
    Scheduler("align_your_steps_GITS", "Align Your Steps GITS"),
    Scheduler("align_your_steps_11", "Align Your Steps 11"),
    Scheduler("align_your_steps_32", "Align Your Steps 32"),
)

LATENT_UPSCALE_MODES: tuple[str, ...] = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)


def samplers_for(is_forge: bool) -> tuple[Sampler, ...]:
    return A1111_SAMPLERS + FORGE_EXTRA_SAMPLERS if is_forge else A1111_SAMPLERS


def schedulers_for(is_forge: bool) -> tuple[Scheduler, ...]:
    return A1111_SCHEDULERS + FORGE_EXTRA_SCHEDULERS if is_forge else A1111_SCHEDULERS


def normalise_sampler(
    sampler_name: str | None, scheduler: str | None, *, is_forge: bool
) -> tuple[str, str]:
    """Return `(sampler name, scheduler label)` as `get_sampler_and_scheduler` does.

    A trailing ` <scheduler>` in the sampler name becomes the scheduler; unknown samplers
    fall back to the first one (`DPM++ 2M`); unknown schedulers to `Automatic`; a scheduler
    equal to the sampler's default is reported as `Automatic`.
    """
    samplers = samplers_for(is_forge)
    schedulers = schedulers_for(is_forge)
    by_key: dict[str, Scheduler] = {}
    for sch in schedulers:
        by_key[sch.name] = sch
        by_key[sch.label] = sch
    found = by_key.get(scheduler or "", schedulers[0])
    name = sampler_name or samplers[0].name
    for sch in schedulers:
        for option in (sch.label, sch.name, *(sch.aliases or ())):
            if name.endswith(" " + option):
                found = sch
                name = name[: -len(option) - 1]
                break
    sampler_map: dict[str, Sampler] = {}
    for smp in samplers:
        sampler_map[smp.name] = smp
        for alias in smp.aliases:
            sampler_map[alias] = smp
    sampler = sampler_map.get(name, samplers[0])
    if sampler.options.get("scheduler") == found.name:
        found = schedulers[0]
    return sampler.name, found.label


def schedule_type_label(sampler_name: str, scheduler_label: str, *, is_forge: bool) -> str:
    """The `Schedule type` written to the infotext: `Automatic` becomes the sampler default."""
    if scheduler_label != "Automatic":
        return scheduler_label
    sampler = next((s for s in samplers_for(is_forge) if s.name == sampler_name), None)
    default = sampler.options.get("scheduler") if sampler else None
    for sch in schedulers_for(is_forge):
        if sch.name == default:
            return sch.label
    return scheduler_label


def upscalers_json(esrgan_dir: str, sep: str) -> list[dict[str, Any]]:
    """`/sdapi/v1/upscalers`: built-ins plus one local ESRGAN model."""

    def item(
        name: str, model_name: str | None, path: str | None, scale: float = 4
    ) -> dict[str, Any]:
        return {
            "name": name,
            "model_name": model_name,
            "model_path": path,
            "model_url": None,
            "scale": scale,
        }

    return [
        item("None", None, None),
        item("Lanczos", None, None),
        item("Nearest", None, None),
        item("4x-UltraSharp", "ESRGAN", f"{esrgan_dir}{sep}4x-UltraSharp.pth"),
        item(
            "ESRGAN_4x",
            "ESRGAN_4x",
            "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth",
        ),
        item(
            "R-ESRGAN 4x+",
            "RealESRGAN",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
        ),
        item(
            "R-ESRGAN 4x+ Anime6B",
            "RealESRGAN",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/"
            "RealESRGAN_x4plus_anime_6B.pth",
        ),
        item("SwinIR 4x", "SwinIR 4x", None),
    ]


def default_options(*, is_forge: bool, checkpoint: str) -> dict[str, Any]:
    """A representative subset of the real option keys with their defaults.

    Values are stored natively (ints stay ints, as in `opts.data`); GET /options renders ints
    as floats like the server's response model. Keys outside this dict are unknown: setting one
    is a `KeyError` (500), as on a server.
    """
    options: dict[str, Any] = {
        "samples_save": True,
        "samples_format": "png",
        "samples_filename_pattern": "",
        "save_images_add_number": True,
        "grid_save": True,
        "grid_format": "png",
        "return_grid": True,
        "jpeg_quality": 80,
        "webp_lossless": False,
        "outdir_samples": "",
        "outdir_txt2img_samples": "outputs/txt2img-images",
        "outdir_img2img_samples": "outputs/img2img-images",
        "face_restoration": False,
        "face_restoration_model": "CodeFormer",
        "code_former_weight": 0.5,
        "api_enable_requests": True,
        "api_forbid_local_requests": True,
        "api_useragent": "",
        "sd_model_checkpoint": checkpoint,
        "sd_checkpoints_limit": 1,
        "sd_checkpoints_keep_in_cpu": True,
        "sd_checkpoint_cache": 0,
        "sd_unet": "Automatic",
        "emphasis": "Original",
        "CLIP_stop_at_last_layers": 1,
        "randn_source": "GPU",
        "tiling": False,
        "sd_vae": "Automatic",
        "sd_vae_overrides_per_model_preferences": True,
        "sd_checkpoint_hash": "",
        "token_merging_ratio": 0.0,
        "eta_noise_seed_delta": 0,
        "enable_pnginfo": True,
        "add_model_name_to_info": True,
        "add_model_hash_to_info": True,
        "add_vae_name_to_info": True,
        "add_vae_hash_to_info": True,
        "add_user_name_to_info": False,
        "add_version_to_infotext": True,
        "live_previews_enable": True,
        "live_previews_image_format": "png",
        "show_progress_grid": True,
        "show_progress_every_n_steps": 10,
        "show_progress_type": "Approx NN",
        "show_progressbar": True,
        "interrupt_after_current": True,
        "hide_samplers": [],
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_noise": 1.0,
        "eta_ancestral": 1.0,
        "eta_ddim": 0.0,
        "upscaler_for_img2img": None,
        "img2img_fix_steps": False,
        "initial_noise_multiplier": 1.0,
    }
    if is_forge:
        options.update(
            {
                "forge_unet_storage_dtype": "Automatic",
                "forge_inference_memory": 1024,
                "forge_async_loading": "Queue",
                "forge_pin_shared_memory": "CPU",
                "forge_preset": "sd",
                "forge_additional_modules": [],
                "quick_setting_list": ["sd_model_checkpoint"],
                "stealth_pnginfo_option": "Alpha",
                "sd_t2i_width": 512,
                "sd_t2i_height": 640,
                "sd_t2i_cfg": 7,
                "xl_t2i_width": 896,
                "xl_t2i_height": 1152,
                "xl_t2i_cfg": 5,
                "flux_t2i_width": 896,
                "flux_t2i_height": 1152,
                "flux_t2i_cfg": 1,
                "flux_t2i_d_cfg": 3.5,
            }
        )
    else:
        options.update(
            {
                "sd_vae_checkpoint_cache": 0,
                "quicksettings_list": ["sd_model_checkpoint"],
                "lora_add_hashes_to_infotext": True,
                "sd_lora": "None",
                "lora_preferred_name": "Alias from file",
            }
        )
    return options
