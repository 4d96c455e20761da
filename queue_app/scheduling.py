"""Which job a free server takes next: the scheduling policy.

A checkpoint switch costs a GPU seconds to minutes, so a server prefers the jobs for the
checkpoint it has loaded, within bounds that keep the queue fair:

* Priority first: only jobs of the highest priority waiting are considered.
* Then users take turns (queue_app.turns): the queue is in order of priority, turn, age,
  and "first" below means first in that order.
* Among those, the first job whose checkpoint the server has loaded (or that names none)
  runs first, looking no further than the head of the queue: MOBILESD_SCHEDULER_LOOKAHEAD
  jobs. With no checkpoint known to be loaded, the first job runs.
* A job passed over MOBILESD_SCHEDULER_MAX_PASSES times runs next regardless, so none
  starves.
* An "any" job runs only on a server known to have its checkpoint, and is never reserved
  ahead: whichever server is free first takes it.

Only the choice is made here, among rows already read. `queue_app.dispatch` reads the head
of the server's queue (the jobs it may take now, in queue order: priority, turn, age),
claims or reserves the chosen job and counts the passes.
"""

import uuid
from collections.abc import Callable, Sequence

from django.conf import settings

from queue_app.models import Job
from servers_app.checkpoints import checkpoint_key
from servers_app.resolver import ModelLike, resolve

__all__ = ["job_choose_after", "job_choose_next", "jobs_passed_over", "lookahead"]

# The server's checkpoints, read only when an "any" job needs them.
Checkpoints = Callable[[], Sequence[ModelLike]]


def lookahead() -> int:
    """How many jobs of the head of a server's queue the choice looks at."""
    return int(settings.MOBILESD_SCHEDULER_LOOKAHEAD)


def job_choose_next(
    *, candidates: Sequence[Job], loaded: str | None, checkpoints: Checkpoints
) -> Job | None:
    """The job a free server runs next, or None when none of `candidates` may run there.

    `candidates`: the head of the server's queue, in queue order (see the module
    docstring); `loaded`: the checkpoint the server has loaded, in any form (title, path,
    key), or None when unknown.
    """
    return _choose(candidates, checkpoint_key(loaded), checkpoints)


def job_choose_after(
    *, running: Job, candidates: Sequence[Job], loaded: str | None, checkpoints: Checkpoints
) -> Job | None:
    """The job to reserve while `running` generates: the one a claim would choose once it
    ends (with `running`'s checkpoint loaded by then), unless that is an "any" job, which
    is left for whichever server is free first (None)."""
    after = running.checkpoint_key or checkpoint_key(loaded)
    job = _choose(candidates, after, checkpoints)
    return job if job is not None and job.server_id is not None else None


def jobs_passed_over(*, candidates: Sequence[Job], chosen: Job) -> list[uuid.UUID]:
    """The candidates ahead of `chosen` in queue order: each passed over once more by
    choosing it."""
    ahead: list[uuid.UUID] = []
    for job in candidates:
        if job.pk == chosen.pk:
            return ahead
        ahead.append(job.pk)
    return []


def _choose(candidates: Sequence[Job], loaded_key: str, checkpoints: Checkpoints) -> Job | None:
    models: Sequence[ModelLike] = ()
    if any(job.server_id is None for job in candidates):
        models = checkpoints()
    runnable = [job for job in candidates if _may_run_here(job, models)]
    if not runnable:
        return None
    head = runnable[0]
    if not loaded_key or head.passed_over >= settings.MOBILESD_SCHEDULER_MAX_PASSES:
        return head
    for job in runnable:
        if job.priority == head.priority and (
            not job.checkpoint_key or job.checkpoint_key == loaded_key
        ):
            return job
    return head


def _may_run_here(job: Job, models: Sequence[ModelLike]) -> bool:
    """A job of this server runs here; an "any" job only where its checkpoint is known."""
    if job.server_id is not None or not job.checkpoint_key:
        return True
    requested = str((job.generation_params or {}).get("checkpoint_name") or "")
    return resolve(requested, models).model is not None
