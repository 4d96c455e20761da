"""How long a job takes on a server, from MobileSD's own measurements.

Measured when a job completes (queue_app.engine records it from the storing thread, off
the loop that sends requests): the seconds its txt2img request took, from sending it to
its answer. A job that made the server load another checkpoint measures the load: its
seconds less the generation its shape predicts; when its shape has no estimate yet the two
cannot be told apart, and nothing is recorded.

* Generation: seconds per step-image (each image's sampling steps, both passes of a hires
  fix) for each job shape (size, and hires scale: the second pass runs at another size).
  The mean of the first 1/ALPHA jobs of a shape, then an exponentially weighted mean
  (weight ALPHA), so it follows a server that became slower or faster. A shape not measured
  yet is estimated from the measured shapes without hires fix, scaled by megapixels: their
  mean seconds per step-megapixel times its own step-megapixels.
* Loads: per checkpoint key, the same kind of mean. An unmeasured checkpoint costs the mean
  of the server's measured loads; 0 while none has been measured.

A server with no measured job has no estimate (None): its waiting jobs show no ETA.
"""

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from servers_app.models import ServerPerformance

logger = logging.getLogger(__name__)

__all__ = ["ALPHA", "Estimator", "Work", "server_performance_record"]

# Weight of the newest measurement, once a shape has 1/ALPHA of them.
ALPHA = 0.3


@dataclass(frozen=True)
class Work:
    """What a job asks the server to compute. `hires_scale` None: no hires fix."""

    width: int
    height: int
    steps: int
    images: int = 1
    hires_scale: float | None = None
    hires_steps: int = 0

    @property
    def shape(self) -> str:
        base = f"{self.width}x{self.height}"
        return base if self.hires_scale is None else f"{base} hr {self.hires_scale:g}"

    @property
    def step_images(self) -> int:
        return (self.steps + self.hires_steps) * self.images

    @property
    def megapixel_steps(self) -> float:
        first = self.width * self.height * self.steps
        scale = self.hires_scale or 1.0
        second = self.width * self.height * scale * scale * self.hires_steps
        return (first + second) * self.images / 1e6


def _updated(entry: Any, value: float) -> dict[str, Any]:
    """A mean `{"mean", "n"}` with `value` added (see the module docstring)."""
    n = int(entry.get("n", 0)) if isinstance(entry, dict) else 0
    mean = float(entry.get("mean", 0.0)) if n else 0.0
    weight = max(ALPHA, 1.0 / (n + 1))
    return {"mean": round(mean + weight * (value - mean), 6), "n": n + 1}


def _mean(entry: Any) -> float | None:
    if isinstance(entry, dict) and entry.get("n"):
        return float(entry["mean"])
    return None


class Estimator:
    """Estimates from one server's measurements (a ServerPerformance row, or none)."""

    def __init__(
        self, step_seconds: dict[str, Any] | None = None, load_seconds: dict[str, Any] | None = None
    ) -> None:
        self.step_seconds = step_seconds or {}
        self.load_seconds_by_key = load_seconds or {}
        loads = [m for m in map(_mean, self.load_seconds_by_key.values()) if m is not None]
        self.default_load = sum(loads) / len(loads) if loads else 0.0
        self._per_megapixel: float | None = None
        self._per_megapixel_read = False

    @classmethod
    def of(cls, performance: ServerPerformance | None) -> "Estimator":
        if performance is None:
            return cls()
        return cls(performance.step_seconds, performance.load_seconds)

    @property
    def known(self) -> bool:
        """Whether any job was measured here (else every estimate is None)."""
        return any(_mean(entry) is not None for entry in self.step_seconds.values())

    def run_seconds(self, work: Work) -> float | None:
        """The seconds `work` generates for here (no checkpoint load), or None."""
        per_step = _mean(self.step_seconds.get(work.shape))
        if per_step is not None:
            return per_step * work.step_images
        per_megapixel = self._seconds_per_megapixel_step()
        return None if per_megapixel is None else per_megapixel * work.megapixel_steps

    def load_seconds(self, key: str) -> float:
        """The seconds loading checkpoint `key` takes here."""
        measured = _mean(self.load_seconds_by_key.get(key))
        return self.default_load if measured is None else measured

    def _seconds_per_megapixel_step(self) -> float | None:
        if not self._per_megapixel_read:
            self._per_megapixel_read = True
            rates = []
            for shape, entry in self.step_seconds.items():
                per_step, megapixels = _mean(entry), _shape_megapixels(shape)
                if per_step is not None and megapixels:
                    rates.append(per_step / megapixels)
            self._per_megapixel = sum(rates) / len(rates) if rates else None
        return self._per_megapixel


def _shape_megapixels(shape: str) -> float | None:
    """The megapixels of one step-image of `shape`; None for a hires shape (its steps are
    split between two sizes in proportions the shape does not say) or a malformed one."""
    width, _, height = shape.partition("x")
    if not (width.isdigit() and height.isdigit()):
        return None
    return int(width) * int(height) / 1e6


def server_performance_record(
    *, server_id: int, work: Work, run_seconds: float, loaded: str | None = None
) -> None:
    """Add a completed job's measurement: `run_seconds` its request took; `loaded` the key
    of the checkpoint the server loaded for it first (None: none loaded).

    Its own row, locked for the read-modify-write (two slots of a server may complete at
    once); never the Server row a claim locks.
    """
    if run_seconds <= 0 or work.step_images <= 0:
        return
    with transaction.atomic():
        row, _ = ServerPerformance.objects.select_for_update().get_or_create(server_id=server_id)
        if loaded is None:
            row.step_seconds = {
                **row.step_seconds,
                work.shape: _updated(
                    row.step_seconds.get(work.shape), run_seconds / work.step_images
                ),
            }
        else:
            generation = Estimator.of(row).run_seconds(work)
            if generation is None:
                return  # the load cannot be told from the generation yet
            load = max(run_seconds - generation, 0.0)
            row.load_seconds = {
                **row.load_seconds,
                loaded: _updated(row.load_seconds.get(loaded), load),
            }
        row.jobs_measured += 1
        row.save()
