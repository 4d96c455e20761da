"""Batches: many jobs in one submit, from a list of parameters or the product of axes (an
X/Y/Z plot). Writes (submit, cancel, delete) and the reads of the batch API.

A batch's jobs are ordinary jobs (the scheduler, cancel, retry and delete treat them as
any other); the batch row records who asked for them, on which server, and the request as
sent. They are created in one transaction, in an order that groups them by checkpoint, so
that a server loads each checkpoint once for the batch where it can.
"""

import itertools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from core_app.errors import Conflict, InvalidInput, NotFound
from core_app.models import ApiKey
from queue_app.control import jobs_cancel
from queue_app.extension_checks import job_requirement_keys
from queue_app.images import delete_image_files, image_storage_names
from queue_app.models import ACTIVE_STATUSES, ANY_SERVER, Batch, Job, JobImage, JobStatus
from queue_app.params import requested_loras
from queue_app.quotas import batch_quota_check
from queue_app.services import (
    job_models_check,
    job_nudge_on_commit,
    lora_entry_names,
    scoped_idempotency_key,
    waits_until,
)
from queue_app.turns import job_next_turn
from queue_app.uploads import JobInputs, job_inputs_attach, job_inputs_resolve
from servers_app.checkpoints import checkpoint_key
from servers_app.models import Server
from servers_app.resolver import lora_key
from servers_app.selectors import server_get

logger = logging.getLogger(__name__)

# The generation_params keys an axis may vary, and the axis of one LoRA's weight.
AXIS_FIELDS = (
    "positive_prompt",
    "negative_prompt",
    "checkpoint_name",
    "seed",
    "subseed",
    "cfg_scale",
    "distilled_cfg_scale",
    "steps",
    "sampler_name",
    "scheduler_or_quality_preset",
    "width",
    "height",
    "clip_skip",
    "denoising_strength",
)
LORA_WEIGHT_AXIS = "lora_weight"


@dataclass(frozen=True)
class BatchItem:
    """One job of a batch: its parameters, and where they came from (for error paths):
    its index in `items`, or the index of each axis's value."""

    params: dict[str, Any]
    index: int
    coords: tuple[int, ...] | None = None


def batch_items(
    *,
    generation_params: dict[str, Any] | None,
    items: list[dict[str, Any]] | None = None,
    axes: list[dict[str, Any]] | None = None,
) -> list[BatchItem]:
    """The jobs of a (validated) batch request, in its order: each item over the base, or
    every combination of the axes' values over the base, the first axis varying slowest."""
    base = dict(generation_params or {})
    if items is not None:
        return [BatchItem({**base, **item}, index) for index, item in enumerate(items)]
    axes = axes or []
    ranges = [range(len(axis["values"])) for axis in axes]
    combinations = []
    for index, coords in enumerate(itertools.product(*ranges)):
        params = dict(base)
        for axis, at in zip(axes, coords, strict=True):
            _apply(params, axis, axis["values"][at])
        combinations.append(BatchItem(params, index, tuple(coords)))
    return combinations


def _apply(params: dict[str, Any], axis: dict[str, Any], value: Any) -> None:
    if axis["field"] != LORA_WEIGHT_AXIS:
        params[axis["field"]] = value
        return
    name = axis["lora"]
    loras = [dict(entry) for entry in params.get("loras") or []]
    for entry in loras:
        if entry.get("name") == name:
            entry["weight"] = value
            break
    else:
        loras.append({"name": name, "weight": value})
    params["loras"] = loras


def _check_batch_models(
    server: Server | None, batch: list[BatchItem], axes: list[dict[str, Any]] | None
) -> None:
    """The model checks of a submit (services.job_models_check), once per distinct checkpoint
    and LoRAs; a refusal names the first item (or axis value) that asked for it."""
    problems: dict[str, list[str]] = {}
    codes: set[str] = set()
    seen: set[tuple[Any, ...]] = set()
    for item in batch:
        params = item.params
        key = (
            str(params.get("checkpoint_name") or "").strip(),
            tuple(requested_loras(params)),
            tuple(sorted(lora_entry_names(params))),
            # The extras' needs (VAE, styles, scripts, ...) and the mode they are for.
            tuple(job_requirement_keys(params)),
            str(params.get("mode") or ""),
        )
        if key in seen:
            continue
        seen.add(key)
        try:
            job_models_check(server, params)
        except InvalidInput as refused:
            codes.add(refused.code)
            for field, messages in (refused.fields or {}).items():
                problems.setdefault(_item_path(field, item, axes), []).extend(messages)
    if problems:
        refusal = InvalidInput(problems)
        if len(codes) == 1:
            refusal.code = codes.pop()  # e.g. script_not_found, as for one job
        raise refusal


def _item_path(field: str, item: BatchItem, axes: list[dict[str, Any]] | None) -> str:
    """Where in the request a problem of `generation_params.<name>` of `item` lies."""
    name = field.removeprefix("generation_params.")
    if item.coords is None:
        return f"items.{item.index}.{name}"
    for number, (axis, at) in enumerate(zip(axes or [], item.coords, strict=True)):
        if axis["field"] == name:
            return f"axes.{number}.values.{at}"
    return field


def _run_order(batch: list[BatchItem], loaded: str | None) -> list[int]:
    """The items' indices in the order their jobs queue: grouped by checkpoint, the group
    of the server's loaded one first, then the others as they first appear."""
    first_seen: dict[str, int] = {}
    for item in batch:
        first_seen.setdefault(checkpoint_key(str(item.params.get("checkpoint_name") or "")), 0)
    rank = {key: number + 1 for number, key in enumerate(first_seen)}
    loaded_key = checkpoint_key(loaded or "")
    if loaded_key in rank:
        rank[loaded_key] = 0
    return sorted(
        range(len(batch)),
        key=lambda i: rank[checkpoint_key(str(batch[i].params.get("checkpoint_name") or ""))],
    )


def batch_submit(
    *,
    owner: Any,
    target_server_alias: str,
    generation_params: dict[str, Any] | None,
    items: list[dict[str, Any]] | None = None,
    axes: list[dict[str, Any]] | None = None,
    name: str = "",
    priority: int = 0,
    not_before: datetime | None = None,
    expires_at: datetime | None = None,
    api_key: ApiKey | None = None,
    idempotency_key: str | None = None,
    callback_url: str = "",
) -> tuple[Batch, list[UUID], bool]:
    """Queue the jobs of a batch; returns (batch, its job ids in item order, created).

    All of them or none: the model checks of a submit run for every distinct checkpoint
    and set of LoRAs first, and the jobs are written in one transaction (one INSERT), with
    the server row locked as job_submit does. With an idempotency key, a repeated submit
    returns the first one's batch; the same key with another request is refused.
    """
    request = {"generation_params": generation_params, "items": items, "axes": axes}
    scoped_key = scoped_idempotency_key(api_key, idempotency_key)
    if scoped_key is not None:
        existing = Batch.objects.filter(idempotency_key=scoped_key).first()
        if existing is not None:
            return _replayed(existing, target_server_alias, request)
    batch_jobs = batch_items(generation_params=generation_params, items=items, axes=axes)
    try:
        with transaction.atomic():
            server = None
            if target_server_alias != ANY_SERVER:
                server = server_get(
                    alias=target_server_alias, queryset=Server.objects.select_for_update()
                )
            _check_batch_models(server, batch_jobs, axes)
            batch_quota_check(owner=owner, jobs=[item.params for item in batch_jobs])
            inputs = _resolve_batch_inputs(owner, batch_jobs, axes)
            batch = Batch.objects.create(
                name=name,
                server=server,
                target_server_alias=server.alias if server else ANY_SERVER,
                priority=priority,
                request=request,
                job_count=len(batch_jobs),
                idempotency_key=scoped_key,
                api_key=api_key,
                owner=owner,
            )
            jobs = _new_jobs(batch, batch_jobs, server, not_before, expires_at, callback_url)
            Job.objects.bulk_create(jobs)
            job_inputs_attach(jobs_and_inputs=[(job, inputs[job.batch_index or 0]) for job in jobs])
            job_nudge_on_commit(job=jobs[0])
    except IntegrityError:
        existing = Batch.objects.filter(idempotency_key=scoped_key).first()
        if scoped_key is None or existing is None:
            raise
        return _replayed(existing, target_server_alias, request)
    logger.info("Queued batch %s: %d jobs for %s", batch.pk, len(jobs), batch.target_server_alias)
    return batch, [job.pk for job in sorted(jobs, key=lambda job: job.batch_index or 0)], True


def _resolve_batch_inputs(
    owner: Any, batch_jobs: list[BatchItem], axes: list[dict[str, Any]] | None
) -> list[JobInputs]:
    """The input images of each job of the batch (queue_app.uploads), by item index; a
    refusal names the item (or axis value) that asked for it."""
    resolved = []
    for item in batch_jobs:
        try:
            resolved.append(job_inputs_resolve(owner=owner, params=item.params))
        except InvalidInput as refused:
            fields = {
                _item_path(field, item, axes): messages
                for field, messages in (refused.fields or {}).items()
            }
            raise InvalidInput(fields) from refused
    return resolved


def _new_jobs(
    batch: Batch,
    batch_jobs: list[BatchItem],
    server: Server | None,
    not_before: datetime | None,
    expires_at: datetime | None,
    callback_url: str = "",
) -> list[Job]:
    """The batch's jobs in their queue order, each created a microsecond after the one
    before it (the queue's order is priority, then age)."""
    now = timezone.now()
    waits = waits_until(not_before)
    # The owner's turns, one after another in the run order (queue_app.turns): another
    # user's job queued meanwhile takes its turn between them, not after the whole batch.
    first_turn = job_next_turn(owner=batch.owner, server=server)
    jobs = []
    order = _run_order(batch_jobs, server.loaded_checkpoint if server else None)
    for rank, index in enumerate(order):
        params = batch_jobs[index].params
        jobs.append(
            Job(
                id=uuid.uuid4(),
                server=server,
                target_server_alias=batch.target_server_alias,
                generation_params=params,
                priority=batch.priority,
                checkpoint_key=checkpoint_key(str(params.get("checkpoint_name") or "")),
                lora_keys=sorted({lora_key(name) for name in requested_loras(params)}),
                requirement_keys=job_requirement_keys(params),
                api_key=batch.api_key,
                owner=batch.owner,
                batch=batch,
                batch_index=index,
                created_at=now + timedelta(microseconds=rank),
                turn=first_turn + rank,
                not_before=not_before,
                next_attempt_at=waits,
                expires_at=expires_at,
                callback_url=callback_url,
            )
        )
    return jobs


def _replayed(
    batch: Batch, target_server_alias: str, request: dict[str, Any]
) -> tuple[Batch, list[UUID], bool]:
    if batch.target_server_alias != target_server_alias or batch.request != request:
        raise Conflict(
            "This Idempotency-Key was already used for a different request.",
            code="idempotency_key_reused",
        )
    return batch, batch_job_ids(batch=batch), False


def batch_job_ids(*, batch: Batch) -> list[UUID]:
    """The ids of the batch's jobs (those not deleted), in item order."""
    return list(batch.jobs.order_by("batch_index").values_list("pk", flat=True))


def batch_get(*, batch_id: str | UUID, owner: Any | None) -> Batch:
    """The batch with this id, if `owner` (None: anyone) owns it; else, as for an unknown
    or malformed id, a 404."""
    try:
        pk = batch_id if isinstance(batch_id, UUID) else UUID(str(batch_id))
    except ValueError:
        pk = None
    batches = Batch.objects.select_related("server")
    if owner is not None:
        batches = batches.filter(owner=owner)
    batch = batches.filter(pk=pk).first() if pk else None
    if batch is None:
        raise NotFound(f"Batch '{batch_id}' not found.", code="batch_not_found")
    return _with_counts(batch)


def _with_counts(batch: Batch) -> Batch:
    counts = dict(batch.jobs.order_by().values_list("status").annotate(n=Count("pk")))
    batch.counts = {status: counts.get(status, 0) for status in JobStatus.values}  # type: ignore[attr-defined]
    batch.finished = not any(counts.get(status) for status in ACTIVE_STATUSES)  # type: ignore[attr-defined]
    return batch


def batch_list(*, owner: Any | None) -> QuerySet[Batch]:
    """Batches, newest first, of `owner` (None: everyone's), each with `n_<status>` counts."""
    batches = Batch.objects.select_related("server").order_by("-created_at")
    if owner is not None:
        batches = batches.filter(owner=owner)
    counts = {f"n_{s}": Count("jobs", filter=Q(jobs__status=s)) for s in JobStatus.values}
    return batches.annotate(**counts)


def batch_listed(batch: Batch) -> Batch:
    """A row of batch_list with `counts` and `finished` as batch_get sets them."""
    batch.counts = {status: getattr(batch, f"n_{status}") for status in JobStatus.values}  # type: ignore[attr-defined]
    batch.finished = not any(batch.counts[status] for status in ACTIVE_STATUSES)  # type: ignore[attr-defined]
    return batch


def batch_jobs(*, batch: Batch) -> QuerySet[Job]:
    return batch.jobs.order_by("batch_index")


def batch_images(*, batch: Batch) -> QuerySet[JobImage]:
    return JobImage.objects.filter(job__batch=batch).order_by("job__batch_index", "index")


def batch_cancel(*, batch_id: str | UUID, owner: Any | None) -> tuple[Batch, int]:
    """Cancel every pending or processing job of the batch; returns (batch, how many).

    As queue_app.control.jobs_cancel: pending ones in one conditional update, processing
    ones through job_cancel, which interrupts their server. A batch with nothing left to
    cancel is not an error (0).
    """
    batch = batch_get(batch_id=batch_id, owner=owner)
    cancelled = jobs_cancel(owner=None, batch=batch, include_processing=True)
    logger.info("Cancelled %d job(s) of batch %s", cancelled, batch.pk)
    return _with_counts(batch), cancelled


def batch_delete(*, batch_id: str | UUID, owner: Any | None) -> tuple[UUID, int]:
    """Delete the batch, its jobs and their image files (once the delete has committed);
    its active jobs are cancelled first. Returns (batch id, jobs deleted)."""
    batch, _ = batch_cancel(batch_id=batch_id, owner=owner)
    pk = batch.pk
    with transaction.atomic():
        images = JobImage.objects.filter(job__batch=batch)
        files = [name for image in images for name in image_storage_names(image)]
        deleted = Job.objects.filter(batch=batch).count()
        Job.objects.filter(batch=batch).delete()
        batch.delete()
        transaction.on_commit(lambda: delete_image_files(files))
    logger.info("Deleted batch %s: %d job(s), %d stored file(s)", pk, deleted, len(files))
    return pk, deleted
