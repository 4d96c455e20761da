"""One txt2img / img2img job, run inside the simulated server's FIFO queue lock.

Lifecycle (REFERENCE A.3): the task id is added to the pending queue and a lock ticket taken
in one step (so queue order == lock order); inside the lock the task becomes current, the
settings overrides are applied, the checkpoint is loaded if it differs from the loaded one,
then `n_iter` batches are sampled step by step. Interrupt stops sampling and returns what was
produced (200); skip ends only the current batch. On success the task is `finish`ed; on an
error it stays current (reported `active`) until another task starts.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import random
import re
import time
from collections.abc import Callable
from typing import Any

from .catalog import (
    LATENT_UPSCALE_MODES,
    normalise_sampler,
    schedule_type_label,
    upscalers_json,
)
from .config import SimulatorConfig
from .errors import ApiError, server_error
from .events import EventLog
from .extensions import styled_prompts
from .faults import Faults
from .imaging import (
    MAX_PIXELS,
    Latent,
    decode_image,
    output_size,
    render_img2img_png,
    render_png,
)
from .infotext import format_infotext
from .runtime import CheckpointEntry, LockClosedError, Runtime

logger = logging.getLogger(__name__)

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_NAME_SYMBOLS = str.maketrans("", "", ":,")


class JobAbortedError(Exception):
    """The simulated process was restarted or stopped while the job waited or ran."""


def create_task_id(mode: str) -> str:
    """`task(<mode>-XXXXXXX)`, 7 random upper-case letters/digits, as the web UI makes them."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    # Not a secret: the server itself uses `random` for these ids.
    return f"task({mode}-{''.join(random.choices(alphabet, k=7))})"  # noqa: S311


def random_seed() -> int:
    return random.randrange(4294967294)  # noqa: S311 (a seed, as the server draws it)


class GenerationJob:
    """Runs one validated generation request against a `Runtime`; see the module docstring."""

    def __init__(
        self,
        *,
        config: SimulatorConfig,
        runtime: Runtime,
        faults: Faults,
        events: EventLog,
        mode: str,
        params: dict[str, Any],
        task_id: str,
        drop_connection: Callable[[], None],
    ) -> None:
        self.config = config
        self.rt = runtime
        self.faults = faults
        self.events = events
        self.mode = mode
        self.params = params
        self.task_id = task_id
        self._drop_connection = drop_connection
        self.is_forge = config.is_forge
        self.dropped = False
        # What the job generates from: the request's prompts with its styles applied.
        styles = params.get("styles")
        self.prompt, self.negative_prompt = styled_prompts(
            config,
            str(params.get("prompt") or ""),
            str(params.get("negative_prompt") or ""),
            [str(name) for name in styles] if isinstance(styles, list) else [],
        )

    # -- queueing -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Queue, wait for the lock, run; return the response body or raise."""
        rt = self.rt
        overrides = self.params.get("override_settings") or {}
        with rt.cond:
            if rt.killed:
                raise JobAbortedError
            try:
                ticket = rt.queue_lock.take_ticket()
            except LockClosedError:
                raise JobAbortedError from None
            rt.tasks.add(self.task_id)
            self.events.record(
                f"{self.mode}_received",
                task_id=self.task_id,
                checkpoint=overrides.get("sd_model_checkpoint"),
                # What the request asked of the extensions, as it arrived (issue 16).
                override_settings=dict(overrides),
                styles=self.params.get("styles"),
                script_name=self.params.get("script_name"),
                script_args=self.params.get("script_args"),
                alwayson_scripts=self.params.get("alwayson_scripts"),
            )
        try:
            rt.queue_lock.wait_turn(ticket)
        except LockClosedError:
            with rt.cond:
                rt.tasks.discard(self.task_id)
            raise JobAbortedError from None
        try:
            return self._run_locked()
        finally:
            rt.queue_lock.release()

    def _run_locked(self) -> dict[str, Any]:
        rt = self.rt
        p = self.params
        started = time.monotonic()
        stall = self.faults.stall_seconds
        if stall > 0:
            # Hung before the task starts: it holds the lock but is still reported as queued.
            self.events.record(f"{self.mode}_stalled", task_id=self.task_id, seconds=stall)
            if rt.wait_killed(stall):
                with rt.cond:
                    rt.tasks.discard(self.task_id)
                raise JobAbortedError
        with rt.cond:
            if rt.killed:
                raise JobAbortedError
            n_iter = p["n_iter"] if isinstance(p["n_iter"], int) else 1
            rt.state.begin(job=f"scripts_{self.mode}", job_count=max(n_iter, 0))
            rt.tasks.start(self.task_id)
        self.events.record(f"{self.mode}_started", task_id=self.task_id)
        stored: dict[str, Any] = {}
        try:
            entry = self._load(self._apply_overrides(stored))
            self._check_processing()
            if self.faults.take_error_500():
                raise server_error(
                    self.is_forge,
                    "OutOfMemoryError",
                    "CUDA out of memory. Tried to allocate 2.00 GiB (simulated fault)",
                )
            body, produced, interrupted = self._sample(entry)
            with rt.cond:
                rt.tasks.finish(self.task_id)
        except ApiError as exc:
            self.events.record(
                f"{self.mode}_failed", task_id=self.task_id, status=exc.status, body=exc.body
            )
            raise
        except JobAbortedError:
            self.events.record(f"{self.mode}_aborted", task_id=self.task_id)
            raise
        finally:
            with rt.cond:
                if p["override_settings_restore_afterwards"]:
                    rt.options.update(stored)
                rt.state.end()
        self.events.record(
            f"{self.mode}_finished",
            task_id=self.task_id,
            images=produced,
            interrupted=interrupted,
            dropped=self.dropped,
            seconds=time.monotonic() - started,
        )
        return body

    # -- settings and model -----------------------------------------------------------------
    def _apply_overrides(self, stored: dict[str, Any]) -> CheckpointEntry | None:
        """Apply `override_settings`; an unknown checkpoint alias is silently dropped."""
        rt = self.rt
        overrides = dict(self.params.get("override_settings") or {})
        with rt.cond:
            for key in overrides:
                if key in rt.options:
                    stored[key] = rt.options[key]
            if (
                "sd_model_checkpoint" in overrides
                and rt.resolve(overrides["sd_model_checkpoint"]) is None
            ):
                self.events.record(
                    "checkpoint_override_ignored",
                    task_id=self.task_id,
                    requested=overrides["sd_model_checkpoint"],
                )
                overrides.pop("sd_model_checkpoint")
            for key, value in overrides.items():
                if value == rt.options.get(key):
                    continue  # `Options.set` returns early for an unchanged (or unknown+null) key
                if key not in rt.options:
                    raise server_error(self.is_forge, "KeyError", repr(key))
                rt.options[key] = value
            return rt.configured_checkpoint()

    def _load(self, entry: CheckpointEntry | None) -> CheckpointEntry:
        """Load `entry` unless it is the loaded one (paying `checkpoint_switch_seconds`)."""
        rt = self.rt
        if entry is None:
            raise server_error(
                self.is_forge,
                "FileNotFoundError",
                "No checkpoints found. When searching for checkpoints, looked at: "
                + self.config.server_path("models", "Stable-diffusion"),
            )
        with rt.cond:
            if rt.loaded == entry:
                return entry
            previous = rt.title(rt.loaded) if rt.loaded else None
        seconds = self.config.checkpoint_switch_seconds
        self.events.record(
            "model_loading",
            task_id=self.task_id,
            name=entry.name,
            previous=previous,
            seconds=seconds,
        )
        if seconds > 0 and rt.wait_killed(seconds):
            raise JobAbortedError
        with rt.cond:
            if rt.killed:
                raise JobAbortedError
            load_model(rt, entry)
            title = rt.title(entry)
        self.events.record("model_loaded", task_id=self.task_id, title=title, name=entry.name)
        return entry

    def _check_processing(self) -> None:
        """Failures that happen inside `process_images` (500, after the task started)."""
        p = self.params
        for key in ("steps", "width", "height", "batch_size", "n_iter", "cfg_scale"):
            if p[key] is None:
                raise server_error(
                    self.is_forge,
                    "TypeError",
                    "'NoneType' object cannot be interpreted as an integer",
                )
        empty_init = self.mode == "img2img" and not p["init_images"]
        if p["batch_size"] < 1 or p["n_iter"] < 1 or p["steps"] < 1 or empty_init:
            raise server_error(self.is_forge, "IndexError", "list index out of range")
        if p["width"] < 8 or p["height"] < 8:
            raise server_error(
                self.is_forge, "RuntimeError", "Expected a non-empty latent (width and height >= 8)"
            )
        width, height = self._final_size()
        if width * height * p["batch_size"] > MAX_PIXELS:
            raise server_error(
                self.is_forge, "OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 GiB"
            )
        if self.mode == "txt2img" and p["enable_hr"]:
            if self.is_forge and p["hr_additional_modules"] is None:
                # Forge's `sample_hr_pass` tests `'Use same choices' not in
                # self.hr_additional_modules`, which the API leaves None when not sent.
                raise server_error(
                    self.is_forge, "TypeError", "argument of type 'NoneType' is not iterable"
                )
            upscaler = p["hr_upscaler"]
            names = {u["name"] for u in upscalers_json("", "/")}
            if upscaler is not None and upscaler not in names | set(LATENT_UPSCALE_MODES):
                raise server_error(
                    self.is_forge, "Exception", f"could not find upscaler named {upscaler}"
                )
            hr_ckpt = p["hr_checkpoint_name"]
            if (
                hr_ckpt not in (None, "", "Use same checkpoint")
                and self.rt.resolve(hr_ckpt) is None
            ):
                raise server_error(
                    self.is_forge, "Exception", f"Could not find checkpoint with name {hr_ckpt}"
                )
        refiner = p["refiner_checkpoint"]
        if refiner not in (None, "", "None", "none") and self.rt.resolve(refiner) is None:
            raise server_error(
                self.is_forge, "Exception", f"Could not find checkpoint with name {refiner}"
            )

    def _final_size(self) -> tuple[int, int]:
        p = self.params
        width, height = p["width"], p["height"]
        if self.mode == "txt2img" and p["enable_hr"]:
            rx, ry = p["hr_resize_x"] or 0, p["hr_resize_y"] or 0
            if rx and ry:
                width, height = rx, ry
            elif rx:
                width, height = rx, int(rx * height / width)
            elif ry:
                width, height = int(ry * width / height), ry
            else:
                scale = p["hr_scale"] or 2.0
                width, height = int(width * scale), int(height * scale)
        return output_size(width, height)

    def _steps_per_iteration(self) -> int:
        p = self.params
        steps: int = p["steps"]
        if self.mode == "img2img":
            strength = p["denoising_strength"]
            strength = 0.75 if strength is None else strength
            return max(1, int(min(strength, 0.999) * steps))
        if p["enable_hr"]:
            steps += p["hr_second_pass_steps"] or p["steps"]
        return steps

    # -- sampling -------------------------------------------------------------------------
    def _maybe_drop(self, pending: bool) -> bool:
        if pending:
            self.dropped = True
            self.events.record("connection_dropped", task_id=self.task_id)
            self._drop_connection()
        return False

    def _sample(self, entry: CheckpointEntry) -> tuple[dict[str, Any], int, bool]:
        rt = self.rt
        p = self.params
        batch_size, n_iter = p["batch_size"], p["n_iter"]
        total = batch_size * n_iter
        seed = random_seed() if p["seed"] in (None, -1) else p["seed"]
        subseed = random_seed() if p["subseed"] in (None, -1) else p["subseed"]
        strength = p["subseed_strength"] or 0
        all_seeds = [seed + (i if strength == 0 else 0) for i in range(total)]
        all_subseeds = [subseed + i for i in range(total)]
        sampler, scheduler = normalise_sampler(
            p["sampler_name"] or p["sampler_index"], p["scheduler"], is_forge=self.is_forge
        )
        steps_per_iter = self._steps_per_iteration()
        drop_pending = self.faults.take_drop_mid_job()
        drop_at = steps_per_iter * n_iter // 2
        spp = self.config.seconds_per_step
        width, height = self._final_size()
        # The first pass decodes at the requested size; a hires fix's second pass at the
        # final one.
        base_size = output_size(p["width"], p["height"])
        base_steps = p["steps"] if self.mode == "txt2img" and p["enable_hr"] else steps_per_iter
        with rt.cond:
            options = dict(rt.options)
            hashed = rt.is_hashed(entry)
        schedule = schedule_type_label(sampler, scheduler, is_forge=self.is_forge)
        extra = self._extra_generation_params(schedule)
        images: list[str] = []
        infotexts: list[str] = []
        done = 0
        interrupted = False

        def stop_requested() -> bool:
            return rt.killed or rt.state.interrupted or rt.state.skipped

        # Steps end on a fixed schedule from the start, so the sleeps' overshoot does not
        # add up: a job of N steps takes N x seconds_per_step, as a benchmark assumes.
        started = time.monotonic()
        for n in range(n_iter):
            with rt.cond:
                if rt.state.interrupted or rt.state.stopping_generation:
                    interrupted = True
                    break
                rt.state.skipped = False
                rt.state.job_no = n
                rt.state.sampling_step = 0
                rt.state.sampling_steps = steps_per_iter
            partial = False
            for step in range(steps_per_iter):
                if drop_pending and done >= drop_at:
                    drop_pending = self._maybe_drop(drop_pending)
                with rt.cond:
                    remaining = started + (done + 1) * spp - time.monotonic()
                    stop = (
                        rt.cond.wait_for(stop_requested, max(remaining, 0.0))
                        if spp > 0
                        else stop_requested()
                    )
                    if rt.killed:
                        raise JobAbortedError
                    if stop:
                        partial = True
                        interrupted = interrupted or rt.state.interrupted
                        break
                    rt.state.sampling_step = step + 1
                    rt.state.current_latent = Latent(
                        seeds=tuple(all_seeds[n * batch_size : (n + 1) * batch_size]),
                        width=base_size[0] if step < base_steps else width,
                        height=base_size[1] if step < base_steps else height,
                        fraction=(step + 1) / steps_per_iter,
                    )
                done += 1
            for index in range(n * batch_size, (n + 1) * batch_size):
                text = self._infotext(
                    all_seeds[index],
                    all_subseeds[index],
                    entry,
                    sampler,
                    schedule,
                    extra,
                    options,
                    hashed,
                )
                infotexts.append(text)
                png = self._render(index, width, height, all_seeds[index], text, partial)
                images.append(base64.b64encode(png).decode("ascii"))
            with rt.cond:
                rt.state.next_job(rt.options)
        self._maybe_drop(drop_pending)
        info = self._info(
            entry=entry,
            hashed=hashed,
            sampler=sampler,
            all_seeds=all_seeds,
            all_subseeds=all_subseeds,
            extra=extra,
            infotexts=infotexts,
            options=options,
        )
        parameters = dict(p)
        if self.mode == "img2img" and not p["include_init_images"]:
            parameters["init_images"] = None
            parameters["mask"] = None
        body = {
            "images": images if p["send_images"] else [],
            "parameters": parameters,
            "info": json.dumps(info, default=lambda _o: None),
        }
        return body, len(images), interrupted

    def _render(
        self, index: int, width: int, height: int, seed: int, text: str, partial: bool
    ) -> bytes:
        """Image `index`: txt2img's gradient, or for img2img one drawn from init image
        `index` (cycling through them, as the server does) and the mask."""
        p = self.params
        if self.mode != "img2img":
            return render_png(width, height, seed, text, partial=partial)
        inits = p["init_images"]
        strength = p["denoising_strength"]
        return render_img2img_png(
            decode_image(inits[index % len(inits)]),
            width,
            height,
            seed,
            text,
            denoising_strength=0.75 if strength is None else strength,
            resize_mode=p["resize_mode"] or 0,
            mask=decode_image(p["mask"]) if p["mask"] else None,
            mask_invert=bool(p["inpainting_mask_invert"]),
            partial=partial,
        )

    def _extra_generation_params(self, schedule: str) -> dict[str, Any]:
        """`p.extra_generation_params`: a resolved schedule, hires settings, LoRA hashes."""
        p = self.params
        extra: dict[str, Any] = {}
        if schedule != "Automatic":
            extra["Schedule type"] = schedule
        if self.mode == "txt2img" and p["enable_hr"]:
            extra["Denoising strength"] = p["denoising_strength"]
            if p["hr_resize_x"] or p["hr_resize_y"]:
                extra["Hires resize"] = f"{p['hr_resize_x']}x{p['hr_resize_y']}"
            else:
                extra["Hires upscale"] = p["hr_scale"]
            if p["hr_second_pass_steps"]:
                extra["Hires steps"] = p["hr_second_pass_steps"]
            extra["Hires upscaler"] = p["hr_upscaler"]
        lora_hashes = self._lora_hashes()
        if lora_hashes:
            extra["Lora hashes"] = lora_hashes
        return extra

    def _lora_hashes(self) -> str | None:
        p = self.params
        if p["disable_extra_networks"]:
            return None
        found: dict[str, str] = {}
        with self.rt.cond:
            for kind, args in _EXTRA_NETWORK.findall(self.prompt):
                if kind not in ("lora", "lyco"):
                    continue
                name = args.split(":", 1)[0]
                entry = self.rt.find_lora(name)
                if entry is not None:
                    found[name.translate(_NAME_SYMBOLS)] = entry.shorthash(self.is_forge)
        return ", ".join(f"{k}: {v}" for k, v in found.items()) or None

    def _infotext(
        self,
        seed: int,
        subseed: int,
        entry: CheckpointEntry,
        sampler: str,
        schedule: str,
        extra: dict[str, Any],
        options: dict[str, Any],
        hashed: bool,
    ) -> str:
        p = self.params
        clip_skip = options.get("CLIP_stop_at_last_layers") or 1
        denoising = p["denoising_strength"] if self.mode == "img2img" else None
        params: dict[str, Any] = {
            "Steps": p["steps"],
            "Sampler": sampler,
            "Schedule type": schedule,
            "CFG scale": p["cfg_scale"],
            "Seed": seed,
            "Face restoration": options.get("face_restoration_model")
            if p["restore_faces"]
            else None,
            "Size": f"{p['width']}x{p['height']}",
            "Model hash": entry.shorthash
            if hashed and options.get("add_model_hash_to_info", True)
            else None,
            "Model": entry.name_for_extra if options.get("add_model_name_to_info", True) else None,
            "Variation seed": None,
            "Variation seed strength": None,
            "Seed resize from": None,
            "Denoising strength": denoising,
            "Clip skip": None if int(clip_skip) <= 1 else int(clip_skip),
            "Tiling": "True" if p["tiling"] else None,
        }
        if p["subseed_strength"]:
            params["Variation seed"] = subseed
            params["Variation seed strength"] = p["subseed_strength"]
        if (p["seed_resize_from_w"] or 0) > 0 and (p["seed_resize_from_h"] or 0) > 0:
            params["Seed resize from"] = f"{p['seed_resize_from_w']}x{p['seed_resize_from_h']}"
        params.update(extra)
        if options.get("add_version_to_infotext", True):
            params["Version"] = self.config.version
        if self.is_forge:
            modules = options.get("forge_additional_modules") or []
            for number, module in enumerate(modules, start=1):
                stem = posixpath.splitext(str(module).replace("\\", "/").rsplit("/", 1)[-1])[0]
                params[f"Module {number}"] = stem
        return format_infotext(self.prompt, self.negative_prompt, params)

    def _info(
        self,
        *,
        entry: CheckpointEntry,
        hashed: bool,
        sampler: str,
        all_seeds: list[int],
        all_subseeds: list[int],
        extra: dict[str, Any],
        infotexts: list[str],
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """`Processed.js()`: the generation info the API returns as a JSON string."""
        p = self.params
        total = len(all_seeds)
        prompt, negative = self.prompt, self.negative_prompt
        with self.rt.cond:
            job_timestamp = self.rt.state.job_timestamp
        restore_faces = bool(p["restore_faces"])
        return {
            "prompt": prompt,
            "all_prompts": [prompt] * total,
            "negative_prompt": negative,
            "all_negative_prompts": [negative] * total,
            "seed": all_seeds[0],
            "all_seeds": all_seeds,
            "subseed": all_subseeds[0],
            "all_subseeds": all_subseeds,
            "subseed_strength": p["subseed_strength"],
            "width": p["width"],
            "height": p["height"],
            "sampler_name": sampler,
            "cfg_scale": p["cfg_scale"],
            "steps": p["steps"],
            "batch_size": p["batch_size"],
            "restore_faces": restore_faces,
            "face_restoration_model": options.get("face_restoration_model")
            if restore_faces
            else None,
            "sd_model_name": entry.name_for_extra,
            "sd_model_hash": entry.shorthash if hashed else None,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": p["seed_resize_from_w"],
            "seed_resize_from_h": p["seed_resize_from_h"],
            "denoising_strength": p["denoising_strength"],
            "extra_generation_params": extra,
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "styles": list(p["styles"] or []),
            "job_timestamp": job_timestamp,
            "clip_skip": int(options.get("CLIP_stop_at_last_layers") or 1),
            "is_using_inpainting_conditioning": False,
            "version": self.config.version,
        }


def load_model(rt: Runtime, entry: CheckpointEntry) -> None:
    """Make `entry` the loaded checkpoint (caller holds `rt.cond`): hashes it on first load.

    A1111 also writes the now hashed title back into the `sd_model_checkpoint` option.
    """
    rt.loaded = entry
    rt.mark_hashed(entry)
    rt.options["sd_checkpoint_hash"] = entry.sha256 if rt.is_hashed(entry) else ""
    if not rt.config.is_forge:
        rt.options["sd_model_checkpoint"] = rt.title(entry)
    logger.info("loaded checkpoint %s", rt.title(entry))
