"""Writes for jobs. Every status change is an atomic conditional update, so a repeated
request or message cannot move a job twice."""

import contextlib
import logging
import threading
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core_app.errors import Conflict, InvalidInput, NotFound
from core_app.models import ApiKey
from queue_app.extension_checks import extensions_missing, job_requirement_keys
from queue_app.extension_params import requested_extras
from queue_app.images import delete_image_files, image_storage_names
from queue_app.models import ANY_SERVER, FINISHED_STATUSES, Job, JobStatus
from queue_app.params import requested_loras
from queue_app.quotas import quota_check
from queue_app.turns import job_next_turn
from queue_app.uploads import job_inputs_attach, job_inputs_resolve
from servers_app.checkpoints import checkpoint_key
from servers_app.models import Server
from servers_app.resolver import lora_key, resolve, resolve_lora
from servers_app.selectors import server_checkpoints, server_get, server_loras

logger = logging.getLogger(__name__)

CANCELLED_DETAILS = {"cancelled": True, "message": "Job cancelled by user"}


def scoped_idempotency_key(api_key: ApiKey | None, key: str | None) -> str | None:
    """An Idempotency-Key as stored: the same key from two API keys is two requests."""
    if not key:
        return None
    return f"{api_key.pk if api_key else 'anon'}:{key}"


def job_submit(
    *,
    owner: Any,
    target_server_alias: str,
    generation_params: dict[str, Any],
    priority: int = 0,
    api_key: ApiKey | None = None,
    idempotency_key: str | None = None,
    not_before: datetime | None = None,
    expires_at: datetime | None = None,
    callback_url: str = "",
) -> tuple[Job, bool]:
    """Queue a job as `pending` and nudge the workers; returns (job, created).

    The job belongs to `owner` (a user), within their quotas (queue_app.quotas), and
    takes its turn among theirs (queue_app.turns). `target_server_alias` "any" lets the
    scheduler pick the server. It is never claimed before `not_before`, and fails
    `expired` if still pending at `expires_at` (the caller checks that one comes after the
    other). With an idempotency key, a repeated submit returns the job of the first one,
    and the same key with different content is refused. The server row is locked so that
    a concurrent
    server_delete cannot leave the job without its server.
    """
    scoped_key = scoped_idempotency_key(api_key, idempotency_key)
    if scoped_key is not None:
        existing = Job.objects.filter(idempotency_key=scoped_key).first()
        if existing is not None:
            return _replayed(existing, target_server_alias, generation_params), False
    try:
        with transaction.atomic():
            if target_server_alias == ANY_SERVER:
                server = None
            else:
                server = server_get(
                    alias=target_server_alias, queryset=Server.objects.select_for_update()
                )
            job_models_check(server, generation_params)
            quota_check(owner=owner, generation_params=generation_params)
            inputs = job_inputs_resolve(owner=owner, params=generation_params)
            job = Job.objects.create(
                server=server,
                target_server_alias=server.alias if server else ANY_SERVER,
                generation_params=generation_params,
                priority=priority,
                turn=job_next_turn(owner=owner, server=server),
                checkpoint_key=checkpoint_key(str(generation_params.get("checkpoint_name") or "")),
                lora_keys=sorted({lora_key(name) for name in requested_loras(generation_params)}),
                requirement_keys=job_requirement_keys(generation_params),
                api_key=api_key,
                owner=owner,
                idempotency_key=scoped_key,
                not_before=not_before,
                next_attempt_at=waits_until(not_before),
                expires_at=expires_at,
                callback_url=callback_url,
            )
            job_inputs_attach(jobs_and_inputs=[(job, inputs)])
            job_nudge_on_commit(job=job)
    except IntegrityError:
        # A concurrent submit with the same key won the race.
        existing = Job.objects.filter(idempotency_key=scoped_key).first()
        if scoped_key is None or existing is None:
            raise
        return _replayed(existing, target_server_alias, generation_params), False
    logger.info("Queued job %s for server %s", job.pk, job.target_server_alias)
    return job, True


def job_models_check(server: Server | None, params: dict[str, Any]) -> None:
    """Refuse a checkpoint or LoRA that a fresh model cache says is not there (with close
    matches), or a LoRA that names several of the server's.

    Only a fresh, non-stale cache is trusted; otherwise the engine checks at dispatch
    against the live list. For "any", refused only if every enabled server's cache is
    fresh and none has the checkpoint and all the LoRAs.
    """
    checkpoint = str(params.get("checkpoint_name") or "").strip()
    loras = requested_loras(params)
    extras = requested_extras(params)
    if not checkpoint and not loras and not extras:
        return
    fresh_after = timezone.now() - timedelta(seconds=settings.MOBILESD_MODELS_FRESH_SECONDS)

    def fresh(candidate: Server) -> bool:
        refreshed = candidate.models_refreshed_at
        return not candidate.models_stale and refreshed is not None and refreshed >= fresh_after

    candidates = [server] if server is not None else list(Server.objects.filter(enabled=True))
    if not candidates or not all(fresh(candidate) for candidate in candidates):
        return
    listed = {str(name).strip() for name in lora_entry_names(params)}
    problems: dict[str, list[str]] = {}
    codes: set[str] = set()
    for candidate in candidates:
        missing: dict[str, list[str]] = {}
        if checkpoint:
            resolution = resolve(checkpoint, server_checkpoints(server=candidate))
            if resolution.model is None:
                missing["generation_params.checkpoint_name"] = [resolution.message(candidate.alias)]
        models = server_loras(server=candidate) if loras else []
        for name in loras:
            resolution = resolve_lora(name, models)
            if resolution.model is None:
                field = "loras" if name in listed else "positive_prompt"
                missing.setdefault(f"generation_params.{field}", []).append(
                    resolution.message(candidate.alias)
                )
        # The VAE, modules, styles, upscaler and scripts (queue_app.extension_checks).
        for lacking in extensions_missing(candidate, params) if extras else []:
            missing.setdefault(f"generation_params.{lacking.field}", []).append(lacking.message)
            codes.add(lacking.code)
        if not missing:
            return
        for field, messages in missing.items():
            problems.setdefault(field, []).extend(messages)
    raise _models_refusal(problems, codes)


def _models_refusal(problems: dict[str, list[str]], codes: set[str]) -> InvalidInput:
    """A 400 naming every problem; its code is the extension's (`script_not_found`, ...)
    when that is the only kind of problem, else `validation_error`."""
    refusal = InvalidInput(problems)
    extension_fields = {"vae", "text_encoders", "styles", "hr_upscaler"}
    extension_fields |= {"alwayson_scripts", "script_name"}
    only_extensions = all(field.split(".", 1)[-1] in extension_fields for field in problems)
    if only_extensions and len(codes) == 1:
        refusal.code = codes.pop()
    return refusal


def lora_entry_names(params: dict[str, Any]) -> list[str]:
    """The names in the `loras` list of generation params (not those in the prompt)."""
    entries = params.get("loras")
    if not isinstance(entries, list):
        return []
    return [e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def waits_until(not_before: datetime | None) -> datetime | None:
    """A new job's next_attempt_at: its not_before while that is still ahead."""
    return not_before if not_before is not None and not_before > timezone.now() else None


class _Nudges:
    """The nudges that the jobs queued (or requeued) in one transaction call for, sent
    once it commits: one per server however many of its jobs the transaction queued, one
    look for free servers however many "any" jobs, one scheduled release per distinct
    `not_before`. A batch of 128 jobs for 32 servers thus sends 32 messages, not 128 (or
    32 x 128 for "any" jobs), and the worker starts each server once."""

    def __init__(self) -> None:
        self.servers: set[int] = set()
        self.any_server = False
        self.due: set[datetime] = set()
        self.sent = False

    def add(self, job: Job) -> None:
        if job.next_attempt_at is not None:
            self.due.add(job.next_attempt_at)
        elif job.server_id is not None:
            self.servers.add(job.server_id)
        else:
            self.any_server = True

    def __call__(self) -> None:
        from queue_app.tasks import nudge, release_when_due, servers_with_work

        self.sent = True
        if self.due:
            release_when_due(self.due)
        if self.any_server:
            # Every server with work and a free slot, the pinned ones' included.
            nudge(servers_with_work())
            return
        # A server whose slots are all busy is nudged too: the worker running its loop then
        # reserves the job to start the moment the running one ends
        # (queue_app.engine.server_reserve_again); any other worker's run_server ends after
        # its one query (dispatch.server_may_claim).
        nudge(sorted(self.servers))


_pending = threading.local()


def job_nudge_on_commit(*, job: Job) -> None:
    """Have the workers look at `job`'s queue once the current transaction commits (at
    once outside one), coalesced with the other jobs of the same transaction (`_Nudges`).
    A nudge is only a hint: one left over from a rolled-back savepoint is harmless."""
    connection = transaction.get_connection()
    nudges: _Nudges | None = getattr(_pending, "nudges", None)
    if (
        nudges is not None
        and not nudges.sent
        and connection.in_atomic_block
        # Not when the savepoint it was registered in rolled back.
        and any(func is nudges for _, func, _ in connection.run_on_commit)
    ):
        nudges.add(job)
        return
    nudges = _Nudges()
    nudges.add(job)
    _pending.nudges = nudges
    transaction.on_commit(nudges)


def _replayed(job: Job, target_server_alias: str, generation_params: dict[str, Any]) -> Job:
    if job.target_server_alias != target_server_alias or job.generation_params != generation_params:
        raise Conflict(
            "This Idempotency-Key was already used for a different request.",
            code="idempotency_key_reused",
        )
    return job


def job_get(*, job_id: str | UUID, owner: Any | None) -> Job:
    """The job with this id, if `owner` (a user; None: anyone) owns it; a malformed or
    unknown id and another user's job are the same 404."""
    try:
        uuid = job_id if isinstance(job_id, UUID) else UUID(str(job_id))
    except ValueError:
        uuid = None
    not_found = NotFound(f"Job '{job_id}' not found.", code="job_not_found")
    if uuid is None:
        raise not_found
    # The owner, when given, is the job's: it is not read again (a join of the user table
    # was a fifth of a phone's status read).
    jobs = Job.objects.select_related("server")
    jobs = jobs.select_related("owner") if owner is None else jobs.filter(owner=owner)
    try:
        # get(), not first(): a primary key needs no ORDER BY (compiling one was a tenth
        # of a status read).
        job = jobs.get(pk=uuid)
    except Job.DoesNotExist:
        raise not_found from None
    if owner is not None:
        job.owner = owner
    return job


def job_cancel(*, job_id: str | UUID, owner: Any | None) -> Job:
    """Cancel a pending or processing job; a finished job is refused with 409.

    The update is conditional on the status, so a job that finished in the meantime is
    never overwritten, and images that arrive later are discarded (the engine completes
    only a job still processing under its lease). A processing job's task is interrupted
    on its server, if it is the one running there.
    """
    job = job_get(job_id=job_id, owner=owner)
    was_processing = job.status == JobStatus.PROCESSING
    task_id, server_id = job.forge_session_hash, job.server_id
    now = timezone.now()
    updated = Job.objects.filter(
        pk=job.pk, status__in=[JobStatus.PENDING, JobStatus.PROCESSING]
    ).update(
        status=JobStatus.CANCELLED,
        result_details=CANCELLED_DETAILS,
        completed_at=now,
        updated_at=now,
    )
    job.refresh_from_db()
    if not updated:
        raise Conflict(
            f"Job {job.pk} is already {job.status} and cannot be cancelled.",
            code="job_not_cancellable",
        )
    logger.info("Cancelled job %s", job.pk)
    if was_processing and task_id and server_id is not None:
        transaction.on_commit(lambda: _interrupt(server_id, task_id))
    return job


def _interrupt(server_id: int, task_id: str) -> None:
    from queue_app.tasks import interrupt_task

    try:
        interrupt_task.delay(server_id, task_id)
    except Exception as exc:  # broker down: the running worker's monitor interrupts too
        logger.warning("Could not queue the interrupt of %s: %s", task_id, exc)


def job_retry(*, job_id: str | UUID, owner: Any | None) -> Job:
    """Requeue a failed or cancelled job as a new attempt (same id, same parameters).

    Conditional on the status, like every transition; anything else is a 409.
    """
    job = job_get(job_id=job_id, owner=owner)
    now = timezone.now()
    with transaction.atomic():
        server = job.server if job.target_server_alias != ANY_SERVER else None
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):  # else the 409 below
            quota_check(owner=job.owner, generation_params=job.generation_params or {})
        updated = Job.objects.filter(
            pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
        ).update(
            status=JobStatus.PENDING,
            # A new attempt takes a new turn: its old one would put it ahead of everyone.
            turn=job_next_turn(owner=job.owner, server=server),
            result_details=None,
            completed_at=None,
            next_attempt_at=waits_until(job.not_before),
            # An expiry that has passed would fail the new attempt at once.
            expires_at=job.expires_at if job.expires_at and job.expires_at > now else None,
            passed_over=0,
            progress=None,
            lease_token=None,
            lease_expires_at=None,
            retry_count=F("retry_count") + 1,
            server=server,
            updated_at=now,
        )
        job.refresh_from_db()
        if not updated:
            raise Conflict(
                f"Job {job.pk} is {job.status}; only failed or cancelled jobs can be retried.",
                code="job_not_retryable",
            )
        job_nudge_on_commit(job=job)
    logger.info("Requeued job %s (attempt %d)", job.pk, job.retry_count + 1)
    return job


def job_delete(*, job_id: str | UUID, owner: Any | None) -> UUID:
    """Delete a job and its stored image files (files go once the delete has committed).

    A job still pending or processing is cancelled first.
    """
    job = job_get(job_id=job_id, owner=owner)
    pk = job.pk
    if job.status not in FINISHED_STATUSES:
        with contextlib.suppress(Conflict):  # it finished meanwhile: nothing left to stop
            job_cancel(job_id=job.pk, owner=None)
    with transaction.atomic():
        # The image files and their cached thumbnails.
        files = [name for image in job.images.all() for name in image_storage_names(image)]
        job.delete()
        transaction.on_commit(lambda: delete_image_files(files))
    logger.info("Deleted job %s and %d stored file(s)", pk, len(files))
    return pk


def job_run_again(*, job_id: str | UUID, owner: Any | None) -> Job:
    """Queue a new job with the same parameters, server and priority as `job_id`, but a
    random seed (`""`); the original job is left as it is.

    Goes through job_submit, so the target server must still exist and a fresh model cache
    must still list the checkpoint.
    """
    job = job_get(job_id=job_id, owner=owner)
    target = ANY_SERVER if job.target_server_alias == ANY_SERVER else job.server_alias
    params = {**(job.generation_params or {}), "seed": ""}
    new_job, _ = job_submit(
        target_server_alias=target,
        generation_params=params,
        priority=job.priority,
        api_key=job.api_key,
        owner=job.owner,
    )
    logger.info("Job %s runs again as %s", job.pk, new_job.pk)
    return new_job
