"""State of one simulated server process: queue lock, task ids, progress, options, models.

A `Runtime` lives from a start to the next restart/stop; `ForgeSimulator.restart()` throws it
away (dropping queue, task ids and loaded model) and makes a new one. Everything mutable is
guarded by `Runtime.cond`; the FIFO queue lock is separate and is only ever taken while not
holding `cond`, or (for taking a ticket) nested inside it, never the other way round.
"""

from __future__ import annotations

import posixpath
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .config import SimLora, SimModel, SimulatorConfig
from .imaging import Latent, render_preview


class LockClosedError(Exception):
    """The process owning the lock went away (restart/stop) while waiting for it."""


class FifoLock:
    """A ticket lock: holders are served strictly in the order they took their ticket.

    Mirrors `modules/fifo_lock.FIFOLock`. `take_ticket()` reserves the place in line (call it
    together with registering the task, so queue order and lock order agree), `wait_turn()`
    blocks until it is that ticket's turn, `release()` hands over to the next ticket.
    `close()` makes every waiter raise `LockClosedError`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()
        self._closed = False

    def take_ticket(self) -> int:
        with self._cond:
            if self._closed:
                raise LockClosedError
            ticket = self._next_ticket
            self._next_ticket += 1
            return ticket

    def wait_turn(self, ticket: int) -> None:
        with self._cond:
            try:
                while self._serving != ticket:
                    if self._closed:
                        raise LockClosedError
                    self._cond.wait()
                if self._closed:
                    raise LockClosedError
            except BaseException:
                self._abandon(ticket)
                raise

    def release(self) -> None:
        with self._cond:
            self._advance()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def acquire(self) -> None:
        self.wait_turn(self.take_ticket())

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()

    def _abandon(self, ticket: int) -> None:
        if ticket == self._serving:
            self._advance()
        elif ticket > self._serving:
            self._abandoned.add(ticket)


class TaskRegistry:
    """`modules/progress.py`: pending ids (arrival order), the current id, last 16 finished."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.current: str | None = None
        self.finished: deque[str] = deque(maxlen=16)

    def add(self, task_id: str) -> None:
        self.pending[task_id] = time.time()

    def start(self, task_id: str) -> None:
        self.current = task_id
        self.pending.pop(task_id, None)

    def finish(self, task_id: str) -> None:
        if self.current == task_id:
            self.current = None
        self.finished.append(task_id)

    def discard(self, task_id: str) -> None:
        self.pending.pop(task_id, None)

    def queue_position(self, task_id: str) -> tuple[int, int] | None:
        """1-based position among all pending tasks and their count, or None."""
        if task_id not in self.pending:
            return None
        order = sorted(self.pending, key=self.pending.__getitem__)
        return order.index(task_id) + 1, len(order)


@dataclass
class ProcessingState:
    """`shared.state`: what `/sdapi/v1/progress` reports (not tied to a task id), and the
    live preview (`modules/shared_state.py`): sampling leaves its latest latent in
    `current_latent`; a progress request decodes it into `current_image` only when
    `show_progress_every_n_steps` steps were sampled since the last preview (-1: only at
    the end of each batch), and each new preview takes the next `id_live_preview`."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    time_start: float | None = None
    textinfo: str | None = None
    current_latent: Latent | None = None
    current_image: Image.Image | None = None
    current_image_sampling_step: int = 0
    id_live_preview: int = 0

    def begin(self, job: str, job_count: int) -> None:
        self.skipped = self.interrupted = self.stopping_generation = False
        self.job = job
        self.job_count = job_count
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
        self.time_start = time.time()
        self.textinfo = None
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0

    def next_job(self, options: dict[str, Any]) -> None:
        """`State.nextjob`: a batch is done (with period -1, its preview is made now)."""
        if options.get("live_previews_enable") and options.get("show_progress_every_n_steps") == -1:
            self.do_set_current_image(options)
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def set_current_image(self, options: dict[str, Any]) -> None:
        """`State.set_current_image`: a new preview once the period's steps are sampled.

        With a period of 0 every call makes one (and a new id), as on a server."""
        every = options.get("show_progress_every_n_steps", 10)
        if (
            options.get("live_previews_enable")
            and every != -1
            and self.sampling_step - self.current_image_sampling_step >= every
        ):
            self.do_set_current_image(options)

    def do_set_current_image(self, options: dict[str, Any]) -> None:
        if self.current_latent is None:
            return
        grid = bool(options.get("show_progress_grid", True))
        self.current_image = render_preview(self.current_latent, grid=grid)
        self.current_image_sampling_step = self.sampling_step
        self.id_live_preview += 1

    def end(self) -> None:
        # As `State.end()`: only the job and its count reset; flags stay until the next begin.
        self.job = ""
        self.job_count = 0
        self.time_start = None

    def as_json(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint as the server lists it (`CheckpointInfo`)."""

    model: SimModel
    name: str
    filename: str

    @property
    def name_for_extra(self) -> str:
        return posixpath.splitext(posixpath.basename(self.model.name))[0]

    @property
    def model_name(self) -> str:
        return posixpath.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]

    @property
    def sha256(self) -> str:
        return self.model.digest

    @property
    def shorthash(self) -> str:
        return self.sha256[:10]

    @property
    def cache_key(self) -> tuple[str, str]:
        return self.model.name, self.sha256

    def title(self, hashed: bool) -> str:
        return f"{self.name} [{self.shorthash}]" if hashed else self.name

    def ids(self, hashed: bool) -> list[str]:
        """Aliases in registration order (later registrations win on collisions)."""
        old = str(self.model.autov1)
        ids = [old, self.model_name, self.title(hashed), self.name, self.name_for_extra]
        ids.append(f"{self.name} [{old}]")
        if hashed:
            ids += [
                self.shorthash,
                self.sha256,
                f"{self.name} [{self.shorthash}]",
                f"{self.name_for_extra} [{self.shorthash}]",
            ]
        return ids

    def as_json(self, hashed: bool) -> dict[str, Any]:
        return {
            "title": self.title(hashed),
            "model_name": self.model_name,
            "hash": self.shorthash if hashed else None,
            "sha256": self.sha256 if hashed else None,
            "filename": self.filename,
            "config": self.model.config,
        }


@dataclass(frozen=True)
class LoraEntry:
    """A LoRA as `/sdapi/v1/loras` lists it (`NetworkOnDisk`)."""

    lora: SimLora
    path: str

    @property
    def name(self) -> str:
        return self.lora.stem

    @property
    def alias(self) -> str:
        return self.lora.output_name or self.name

    def shorthash(self, is_forge: bool) -> str:
        digest = self.lora.sha256 if is_forge else self.lora.addnet_hash
        return str(digest)[:12]

    def as_json(self) -> dict[str, Any]:
        lora = self.lora
        metadata: dict[str, Any] = {
            "ss_base_model_version": lora.base_model_version,
            "ss_network_module": "networks.lora",
            "ss_network_dim": "32",
            "ss_network_alpha": "16",
            "ss_num_train_images": "40",
            "ss_output_name": self.alias,
            "ss_sd_model_name": "sd_xl_base_1.0.safetensors"
            if lora.base_model_version.startswith("sdxl")
            else "v1-5-pruned-emaonly.safetensors",
            "ss_tag_frequency": {k: dict(v) for k, v in (lora.tag_frequency or {}).items()},
            "ss_training_comment": "None",
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora"
            if lora.base_model_version.startswith("sdxl")
            else "stable-diffusion-v1/lora",
            "sshs_legacy_hash": str(lora.addnet_hash)[:8],
        }
        if lora.output_name is None:
            del metadata["ss_output_name"]
        return {"name": self.name, "alias": self.alias, "path": self.path, "metadata": metadata}


def build_checkpoints(models: Iterable[SimModel], config: SimulatorConfig) -> list[CheckpointEntry]:
    entries = [
        CheckpointEntry(
            model=m,
            name=config.server_name(m.name),
            filename=config.server_path("models", "Stable-diffusion", m.name),
        )
        for m in models
    ]
    return sorted(entries, key=lambda e: e.filename.lower())


def build_loras(loras: Iterable[SimLora], config: SimulatorConfig) -> list[LoraEntry]:
    entries = [LoraEntry(lora=x, path=config.server_path("models", "Lora", x.name)) for x in loras]
    return sorted(entries, key=lambda e: e.path.lower())


class Runtime:
    """One server process lifetime. Mutable fields are guarded by `cond`."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        models: Iterable[SimModel],
        loras: Iterable[SimLora],
        options: dict[str, Any],
        hash_cache: set[tuple[str, str]],
    ) -> None:
        self.config = config
        self.cond = threading.Condition()
        self.killed = False
        self.queue_lock = FifoLock()
        self.tasks = TaskRegistry()
        self.state = ProcessingState()
        self.options: dict[str, Any] = dict(options)
        self.checkpoints = build_checkpoints(models, config)
        self.loras = build_loras(loras, config)
        self.loaded: CheckpointEntry | None = None
        self.app_id = random.getrandbits(63)
        self._hash_cache = hash_cache

    def kill(self) -> None:
        """Mark this process dead: waiters and running jobs abort at their next check."""
        with self.cond:
            self.killed = True
            self.cond.notify_all()
        self.queue_lock.close()

    def wait_killed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; return True (early) if the process was killed."""
        with self.cond:
            return self.cond.wait_for(lambda: self.killed, timeout)

    def is_hashed(self, entry: CheckpointEntry) -> bool:
        return not self.config.no_hashing and entry.cache_key in self._hash_cache

    def mark_hashed(self, entry: CheckpointEntry) -> None:
        if not self.config.no_hashing:
            self._hash_cache.add(entry.cache_key)

    def title(self, entry: CheckpointEntry) -> str:
        return entry.title(self.is_hashed(entry))

    def resolve(self, alias: Any) -> CheckpointEntry | None:
        """Exact `checkpoint_aliases` lookup; None for anything unknown (or not a string)."""
        if not isinstance(alias, str):
            return None
        aliases: dict[str, CheckpointEntry] = {}
        for entry in self.checkpoints:
            for key in entry.ids(self.is_hashed(entry)):
                aliases[key] = entry
        return aliases.get(alias)

    def configured_checkpoint(self) -> CheckpointEntry | None:
        """The checkpoint the options select; the first listed one if that is unknown."""
        found = self.resolve(self.options.get("sd_model_checkpoint"))
        if found is None and self.checkpoints:
            found = self.checkpoints[0]
        return found

    def find_lora(self, name: str) -> LoraEntry | None:
        for entry in self.loras:
            if name in (entry.alias, entry.name):
                return entry
        return None
