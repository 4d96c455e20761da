"""The simulated HTTP API: routing, auth and every endpoint (transport-independent).

Which routes exist depends on the flavour (`/sd-modules` on Forge, `/sd-vae` on A1111) and on
web-UI mode (`/internal/*` and `/app_id` only when `webui=True`). `--api-auth` guards every
`/sdapi/v1/*` route except `loras` and `refresh-loras`; it is checked before the body.

The `Api` knows nothing of sockets or of `ForgeSimulator`: it is handed what it works on
(the config, the fault switches, the event log, the `Disk` and a way to reach the live
`Runtime`), so the HTTP server depends on it and never the other way round.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import LATENT_UPSCALE_MODES, samplers_for, schedulers_for, upscalers_json
from .config import SimulatorConfig
from .disk import Disk
from .errors import ApiError, http_error, method_not_allowed, not_found, server_error
from .events import EventLog
from .extensions import (
    adetailer_models_json,
    check_scripts,
    controlnet_models_json,
    script_info_json,
    scripts_json,
    styles_json,
)
from .faults import Faults
from .generation import GenerationJob, JobAbortedError, create_task_id, load_model
from .imaging import (
    InvalidImageError,
    decode_image,
    decode_image_bytes,
    encode_image,
    read_png_text,
)
from .infotext import parse_infotext
from .runtime import LockClosedError, Runtime, build_checkpoints, build_loras
from .validation import (
    PNG_INFO_FIELDS,
    PROGRESS_REQUEST_FIELDS,
    FieldSpec,
    Kind,
    generation_fields,
    parse_json_body,
    validate_body,
    validate_fields,
)

logger = logging.getLogger(__name__)

_AUTH_EXEMPT = frozenset({"/sdapi/v1/loras", "/sdapi/v1/refresh-loras"})
_PROGRESS_QUERY = (FieldSpec("skip_current_image", Kind.BOOL, False, nullable=False),)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: Mapping[str, str]  # keys lower-cased
    drop_connection: Callable[[], None] = lambda: None


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, Runtime], Any]


@dataclass(frozen=True)
class Img2ImgInputs:
    """The images of the last img2img request, decoded from base64: the bytes as sent."""

    init_images: list[bytes]
    mask: bytes | None


class Api:
    """Routes the requests of one simulated server to its current `Runtime`.

    `runtime()` answers the live process state or raises `JobAbortedError` when the process
    is gone (stopped, or killed by a restart); `disk` is what survives restarts.
    """

    def __init__(
        self,
        *,
        config: SimulatorConfig,
        faults: Faults,
        events: EventLog,
        disk: Disk,
        runtime: Callable[[], Runtime],
    ) -> None:
        self.config = config
        self.is_forge = config.is_forge
        self.faults = faults
        self.events = events
        self.disk = disk
        self._runtime = runtime
        self.routes: dict[str, dict[str, Handler]] = {}
        self.last_img2img_inputs: Img2ImgInputs | None = None
        self._register()

    def _register(self) -> None:
        add = self._add
        v1 = "/sdapi/v1"
        add("POST", f"{v1}/txt2img", lambda r, rt: self._generate(r, rt, "txt2img"))
        add("POST", f"{v1}/img2img", lambda r, rt: self._generate(r, rt, "img2img"))
        add("GET", f"{v1}/progress", self._progress)
        add("POST", f"{v1}/interrupt", self._interrupt)
        add("POST", f"{v1}/skip", self._skip)
        add("GET", f"{v1}/options", self._get_options)
        add("POST", f"{v1}/options", self._set_options)
        add("GET", f"{v1}/sd-models", self._sd_models)
        add("POST", f"{v1}/refresh-checkpoints", self._refresh_checkpoints)
        add("GET", f"{v1}/loras", self._loras)
        add("POST", f"{v1}/refresh-loras", self._refresh_loras)
        add("GET", f"{v1}/samplers", self._samplers)
        add("GET", f"{v1}/schedulers", self._schedulers)
        add("GET", f"{v1}/upscalers", self._upscalers)
        add("GET", f"{v1}/latent-upscale-modes", self._latent_modes)
        add("GET", f"{v1}/memory", self._memory)
        add("GET", f"{v1}/embeddings", self._embeddings)
        add("GET", f"{v1}/hypernetworks", lambda r, rt: [])
        add("GET", f"{v1}/prompt-styles", lambda r, rt: styles_json(self.config))
        add("GET", f"{v1}/face-restorers", self._face_restorers)
        add("GET", f"{v1}/scripts", lambda r, rt: scripts_json(self.config))
        add("GET", f"{v1}/script-info", lambda r, rt: script_info_json(self.config))
        if self.config.has_controlnet:
            add("GET", "/controlnet/model_list", lambda r, rt: controlnet_models_json(self.config))
        if self.config.adetailer:
            add("GET", "/adetailer/v1/ad_model", lambda r, rt: adetailer_models_json(self.config))
        add("POST", f"{v1}/png-info", self._png_info)
        add("POST", f"{v1}/refresh-vae", self._locked_noop)
        add("POST", f"{v1}/refresh-embeddings", self._locked_noop)
        if self.is_forge:
            add("GET", f"{v1}/sd-modules", self._sd_modules)
        else:
            add("GET", f"{v1}/sd-vae", self._sd_vae)
        if self.config.webui:
            add("POST", "/internal/progress", self._internal_progress)
            add("GET", "/internal/pending-tasks", self._pending_tasks)
            add("GET", "/internal/ping", lambda r, rt: {})
            add("GET", "/app_id", lambda r, rt: {"app_id": rt.app_id})

    def _add(self, method: str, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {})[method] = handler

    # -- dispatch -------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Route one request. Raises `JobAbortedError` when the process died meanwhile."""
        methods = self.routes.get(request.path)
        try:
            if methods is None:
                raise not_found()
            handler = methods.get(request.method)
            if handler is None:
                raise method_not_allowed()
            if request.path.startswith("/sdapi/v1/") and request.path not in _AUTH_EXEMPT:
                self._check_auth(request.headers)
            runtime = self._runtime()
            result = handler(request, runtime)
        except ApiError as exc:
            return Response(exc.status, exc.body, exc.headers)
        except JobAbortedError:
            raise
        except Exception as exc:
            logger.exception("simulator error on %s %s", request.method, request.path)
            err = server_error(self.is_forge, type(exc).__name__, str(exc))
            return Response(err.status, err.body)
        return result if isinstance(result, Response) else Response(200, result)

    def _check_auth(self, headers: Mapping[str, str]) -> None:
        users = self.config.auth_users
        if not users:
            return
        challenge = {"WWW-Authenticate": "Basic"}
        header = headers.get("authorization") or ""
        scheme, _, credentials = header.partition(" ")
        if not header or scheme.lower() != "basic":
            raise http_error(self.is_forge, 401, "Not authenticated", challenge)
        try:
            user, sep, password = base64.b64decode(credentials).decode("ascii").partition(":")
            if not sep:
                raise ValueError("no colon")
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise http_error(
                self.is_forge, 401, "Invalid authentication credentials", challenge
            ) from None
        expected = users.get(user)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            raise http_error(self.is_forge, 401, "Incorrect username or password", challenge)

    # -- generation -----------------------------------------------------------------------
    def _generate(self, request: Request, rt: Runtime, mode: str) -> Any:
        params = validate_body(
            request.body, generation_fields(mode, is_forge=self.is_forge), is_forge=self.is_forge
        )
        check_scripts(self.config, params, mode)
        if mode == "img2img":
            self._check_init_images(params["init_images"])
            self._check_mask(params["mask"])
            self.last_img2img_inputs = Img2ImgInputs(
                init_images=[decode_image_bytes(image) for image in params["init_images"]],
                mask=decode_image_bytes(params["mask"]) if params["mask"] else None,
            )
        task_id = params["force_task_id"] or create_task_id(mode)
        job = GenerationJob(
            config=self.config,
            runtime=rt,
            faults=self.faults,
            events=self.events,
            mode=mode,
            params=params,
            task_id=task_id,
            drop_connection=request.drop_connection,
        )
        body = job.run()
        if job.dropped:
            raise JobAbortedError("connection dropped by fault injection")
        return body

    def _check_init_images(self, images: list[Any] | None) -> None:
        if images is None:
            raise http_error(self.is_forge, 404, "Init image not found")
        for image in images:
            if isinstance(image, str) and image.startswith(("http://", "https://")):
                # The simulator never fetches URLs (as with `api_enable_requests` off).
                raise http_error(self.is_forge, 500, "Requests not allowed")
            try:
                decode_image(image if isinstance(image, str) else "")
            except InvalidImageError:
                raise http_error(self.is_forge, 500, "Invalid encoded image") from None

    def _check_mask(self, mask: str | None) -> None:
        # Decoded before the task is queued (`img2imgapi`), with init images' errors.
        if not mask:
            return
        if mask.startswith(("http://", "https://")):
            raise http_error(self.is_forge, 500, "Requests not allowed")
        try:
            decode_image(mask)
        except InvalidImageError:
            raise http_error(self.is_forge, 500, "Invalid encoded image") from None

    def _interrupt(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            rt.state.interrupted = True
            current = rt.tasks.current
            rt.cond.notify_all()
        self.events.record("interrupt", task_id=current)
        return {}

    def _skip(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            rt.state.skipped = True
            current = rt.tasks.current
            rt.cond.notify_all()
        self.events.record("skip", task_id=current)
        return None

    # -- progress -------------------------------------------------------------------------
    def _progress(self, request: Request, rt: Runtime) -> Any:
        """`Api.progressapi`: about whatever runs; the current preview as bare base64 in the
        `samples_format` (made as the live preview period says), unless skip_current_image."""
        query = {k: v[-1] for k, v in request.query.items() if v}
        query = validate_fields(query, _PROGRESS_QUERY, is_forge=self.is_forge, where="query")
        with rt.cond:
            st = rt.state
            state = st.as_json()
            if st.job_count == 0:
                return {
                    "progress": 0,
                    "eta_relative": 0,
                    "state": state,
                    "current_image": None,
                    "textinfo": st.textinfo,
                }
            progress = 0.01
            if st.job_count > 0:
                progress += st.job_no / st.job_count
            if st.sampling_steps > 0:
                progress += 1 / st.job_count * st.sampling_step / st.sampling_steps
            elapsed = time.time() - (st.time_start or time.time())
            eta_relative = elapsed / progress - elapsed
            st.set_current_image(rt.options)
            image = None if query["skip_current_image"] else st.current_image
            fmt = str(rt.options.get("samples_format") or "png")
            textinfo = st.textinfo
        # Encoded outside the lock (a preview is never changed once made): sampling goes on.
        current_image = (
            base64.b64encode(encode_image(image, fmt)).decode("ascii")
            if image is not None
            else None
        )
        return {
            "progress": min(progress, 1.0),
            "eta_relative": eta_relative,
            "state": state,
            "current_image": current_image,
            "textinfo": textinfo,
        }

    def _internal_progress(self, request: Request, rt: Runtime) -> Any:
        """`progress.progressapi`: about one task id; a live preview only when asked for
        (`live_preview`), enabled (`live_previews_enable`), and newer than the one the
        client says it has (`id_live_preview`), as a data: URI in `live_previews_image_format`."""
        req = validate_body(request.body, PROGRESS_REQUEST_FIELDS, is_forge=self.is_forge)
        task_id = req["id_task"]
        with rt.cond:
            tasks = rt.tasks
            active = task_id is not None and task_id == tasks.current
            queued = task_id in tasks.pending
            completed = task_id in tasks.finished
            if not active:
                position = tasks.queue_position(task_id) if task_id is not None else None
                textinfo = f"In queue: {position[0]}/{position[1]}" if position else "Waiting..."
                return {
                    "active": False,
                    "queued": queued,
                    "completed": completed,
                    "progress": None,
                    "eta": None,
                    "live_preview": None,
                    "id_live_preview": -1,
                    "textinfo": textinfo,
                }
            st = rt.state
            progress = 0.0
            if st.job_count > 0:
                progress += st.job_no / st.job_count
                if st.sampling_steps > 0:
                    progress += 1 / st.job_count * st.sampling_step / st.sampling_steps
            progress = min(progress, 1.0)
            elapsed = time.time() - (st.time_start or time.time())
            eta = elapsed / progress - elapsed if progress > 0 else None
            image = None
            id_live_preview = req["id_live_preview"]
            fmt = str(rt.options.get("live_previews_image_format") or "png")
            if rt.options.get("live_previews_enable") and req["live_preview"]:
                st.set_current_image(rt.options)
                if st.id_live_preview != req["id_live_preview"] and st.current_image is not None:
                    image = st.current_image
                    id_live_preview = st.id_live_preview
            info = st.textinfo
        live_preview = None
        if image is not None:
            encoded = base64.b64encode(encode_image(image, fmt)).decode("ascii")
            live_preview = f"data:image/{fmt};base64,{encoded}"
        return {
            "active": True,
            "queued": queued,
            "completed": completed,
            "progress": progress,
            "eta": eta,
            "live_preview": live_preview,
            "id_live_preview": id_live_preview,
            "textinfo": info,
        }

    def _pending_tasks(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            order = sorted(rt.tasks.pending, key=rt.tasks.pending.__getitem__)
        return {"size": len(order), "tasks": order}

    # -- options --------------------------------------------------------------------------
    def _get_options(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            options = dict(rt.options)
        # The response model types every int option as float (`opts.typemap = {int: float}`).
        return {
            k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in options.items()
        }

    def _set_options(self, request: Request, rt: Runtime) -> Any:
        """`set_config`: unknown checkpoint -> 500 RuntimeError; unknown key -> 500 KeyError."""
        data = parse_json_body(request.body, is_forge=self.is_forge, model=False)
        checkpoint = data.get("sd_model_checkpoint")
        changed: dict[str, Any] = {}
        with rt.cond:
            if checkpoint is not None and rt.resolve(checkpoint) is None:
                raise server_error(self.is_forge, "RuntimeError", f"model {checkpoint!r} not found")
            try:
                for key, value in data.items():
                    if value == rt.options.get(key):
                        continue
                    if key not in rt.options:
                        raise server_error(self.is_forge, "KeyError", repr(key))
                    rt.options[key] = value
                    changed[key] = value
            finally:
                self.disk.save_options(changed)
        self.events.record("options_set", options=changed)
        if "sd_model_checkpoint" in changed and not self.is_forge:
            # A1111 reloads synchronously, queued behind running jobs; Forge loads lazily.
            self._with_queue_lock(rt, lambda: self._load_configured(rt))
        return None

    def _load_configured(self, rt: Runtime) -> None:
        with rt.cond:
            entry = rt.configured_checkpoint()
            if entry is None or rt.loaded == entry:
                return
        seconds = self.config.checkpoint_switch_seconds
        self.events.record("model_loading", task_id=None, name=entry.name, seconds=seconds)
        if seconds > 0 and rt.wait_killed(seconds):
            raise JobAbortedError
        with rt.cond:
            load_model(rt, entry)
            title = rt.title(entry)
        self.events.record("model_loaded", task_id=None, title=title, name=entry.name)

    def _with_queue_lock(self, rt: Runtime, action: Callable[[], Any]) -> Any:
        try:
            rt.queue_lock.acquire()
        except LockClosedError:
            raise JobAbortedError from None
        try:
            return action()
        finally:
            rt.queue_lock.release()

    # -- model lists ----------------------------------------------------------------------
    def _sd_models(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            return [entry.as_json(rt.is_hashed(entry)) for entry in rt.checkpoints]

    def _refresh_checkpoints(self, request: Request, rt: Runtime) -> Any:
        def rescan() -> None:
            models = self.disk.models()
            with rt.cond:
                rt.checkpoints = build_checkpoints(models, self.config)
            self.events.record("checkpoints_refreshed", count=len(models))

        self._with_queue_lock(rt, rescan)
        return None

    def _loras(self, request: Request, rt: Runtime) -> Any:
        with rt.cond:
            return [entry.as_json() for entry in rt.loras]

    def _refresh_loras(self, request: Request, rt: Runtime) -> Any:
        loras = self.disk.loras()
        with rt.cond:
            rt.loras = build_loras(loras, self.config)
        self.events.record("loras_refreshed", count=len(loras))
        return None

    def _locked_noop(self, request: Request, rt: Runtime) -> Any:
        self._with_queue_lock(rt, lambda: None)
        return None

    def _samplers(self, request: Request, rt: Runtime) -> Any:
        return [s.as_json() for s in samplers_for(self.is_forge)]

    def _schedulers(self, request: Request, rt: Runtime) -> Any:
        return [s.as_json() for s in schedulers_for(self.is_forge)]

    def _upscalers(self, request: Request, rt: Runtime) -> Any:
        cfg = self.config
        return upscalers_json(cfg.server_path("models", "ESRGAN"), cfg.path_separator)

    def _latent_modes(self, request: Request, rt: Runtime) -> Any:
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    def _sd_modules(self, request: Request, rt: Runtime) -> Any:
        cfg = self.config
        return [
            {"model_name": m.rsplit("/", 1)[-1], "filename": cfg.server_path("models", m)}
            for m in cfg.modules
        ]

    def _sd_vae(self, request: Request, rt: Runtime) -> Any:
        cfg = self.config
        return [
            {"model_name": m.rsplit("/", 1)[-1], "filename": cfg.server_path("models", m)}
            for m in cfg.modules
            if m.startswith("VAE/")
        ]

    def _embeddings(self, request: Request, rt: Runtime) -> Any:
        item = {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": 768,
            "vectors": 1,
        }
        return {"loaded": {name: dict(item) for name in self.config.embeddings}, "skipped": {}}

    def _memory(self, request: Request, rt: Runtime) -> Any:
        gib = 1024**3
        return {
            "ram": {"free": 40.0 * gib, "used": 24.0 * gib, "total": 64.0 * gib},
            "cuda": {
                "system": {"free": 14.0 * gib, "used": 10.0 * gib, "total": 24.0 * gib},
                "active": {"current": 7 * gib, "peak": 9 * gib},
                "allocated": {"current": 7 * gib, "peak": 9 * gib},
                "reserved": {"current": 8 * gib, "peak": 10 * gib},
                "inactive": {"current": 1 * gib, "peak": 2 * gib},
                "events": {"retries": 0, "oom": 0},
            },
        }

    def _face_restorers(self, request: Request, rt: Runtime) -> Any:
        return [
            {"name": "CodeFormer", "cmd_dir": self.config.server_path("models", "Codeformer")},
            {"name": "GFPGAN", "cmd_dir": None},
        ]

    def _png_info(self, request: Request, rt: Runtime) -> Any:
        req = validate_body(request.body, PNG_INFO_FIELDS, is_forge=self.is_forge)
        if not req["image"].strip():
            return {"info": "", "items": {}, "parameters": {}}
        try:
            text, items = read_png_text(req["image"])
        except InvalidImageError:
            raise http_error(self.is_forge, 500, "Invalid encoded image") from None
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}
