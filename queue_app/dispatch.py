"""State changes of the generation engine: claim, reserve, start, heartbeat, complete,
release, fail.

The Job row is the truth. Each change here is one transaction whose update is conditional
on the job's status and lease token, so that a second delivery of a message, a worker that
lost its lease, or a cancel racing a completion can never move a job twice:

* claim: pending -> processing, for a free slot of a server, with a fresh lease token.
  The server row is locked (`select_for_update`), which serializes the claims of one
  server across any number of workers and hosts; candidate jobs are locked with
  `SKIP LOCKED` so claims for different servers never wait on each other.
* reserve / start reserved: while a job generates, its worker chooses the server's next
  job and reserves it (it stays pending, with the worker's token and an expiry in its
  lease fields); when the running job's images arrive, one statement starts the reserved
  job on the slot the finished one hands over. Nothing else may claim a live reservation.
* heartbeat: renews the lease and writes progress while the job is still ours.
* complete / release / fail: processing -> completed / pending / failed, only with our token.

Which job a claim or a reservation takes is `queue_app.scheduling`'s choice; this module
reads the candidates and makes the change.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, Field
from django.utils import timezone

from core_app.leases import LeaseLost, backoff_seconds, lease_expiry, lease_lost_reason
from queue_app import scheduling
from queue_app.models import ANY_SERVER, Job, JobImage, JobPreview, JobStatus, QueueState
from queue_app.previews import PreviewImage
from servers_app.models import CachedModel, ModelKind, Server
from servers_app.selectors import server_checkpoints

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds (or has reserved): run it, then complete, release or fail
    it with `token`.

    `job` and `server` are the rows as claimed (the server's read under its lock), so the
    engine need not read them again.
    """

    job: Job
    server: Server
    token: uuid.UUID
    task_id: str
    # When a reserved job was reserved (None: claimed).
    reserved_at: datetime | None = None

    @property
    def job_id(self) -> uuid.UUID:
        return self.job.pk


def task_id_for(job: Job) -> str:
    """The `force_task_id` sent to the server: the job id, plus the attempt on retries, so
    that an orphan of an earlier attempt is never mistaken for the current one."""
    return str(job.pk) if job.retry_count == 0 else f"{job.pk}.{job.retry_count}"


# --- The statements a server waits for, in SQL --------------------------------------------
#
# Building them with the ORM takes several times longer (in Python, with the GIL shared by
# every server's loop) than the database takes to run them. Each is one text: `{job}` and
# `{server}` are the tables and `{job.status}` etc. their columns, from the models' _meta;
# `{row_lock}` is the locking clause of the database (none on SQLite, which runs one writer
# at a time); every value is bound by name.

# Whether an "any" job fits the server: it has every LoRA the job names (a cached LoRA
# with the key's file stem or alias; see servers_app.resolver.lora_key) and everything else
# it needs (its `requirement_keys`: VAE, modules, styles, upscaler, scripts, ControlNet
# models, each a cached row with that requirement_key; servers_app.extension_cache), or no
# enabled server has them all, and then any server takes it, to fail it with the reason
# (lora_not_found, script_not_found, ...) rather than leave it waiting unexplained.
# `{wanted}` / `{required}` are the sets of the job's keys and `{wanted_key}` /
# `{required_key}` one of them, in the database's JSON functions. The cost depends on the
# server's models and the number of servers, not on the queue.
_ANY_JOB_FITS = """(
    (NOT EXISTS (
      SELECT 1 FROM {wanted} WHERE NOT EXISTS (
        SELECT 1 FROM {model}
        WHERE {model.server_id} = %(server_id)s AND {model.kind} = %(lora_kind)s
          AND ({model.stem_key} = {wanted_key} OR LOWER({model.alias}) = {wanted_key})))
     AND NOT EXISTS (
      SELECT 1 FROM {required} WHERE NOT EXISTS (
        SELECT 1 FROM {model}
        WHERE {model.server_id} = %(server_id)s
          AND {model.requirement_key} = {required_key})))
    OR NOT EXISTS (
      SELECT 1 FROM {server} AS holder
      WHERE holder.{server.enabled}
        AND NOT EXISTS (
          SELECT 1 FROM {wanted} WHERE NOT EXISTS (
            SELECT 1 FROM {model}
            WHERE {model.server_id} = holder.{server.id} AND {model.kind} = %(lora_kind)s
              AND ({model.stem_key} = {wanted_key} OR LOWER({model.alias}) = {wanted_key})))
        AND NOT EXISTS (
          SELECT 1 FROM {required} WHERE NOT EXISTS (
            SELECT 1 FROM {model}
            WHERE {model.server_id} = holder.{server.id}
              AND {model.requirement_key} = {required_key})))
  )"""

# The rows of a job's JSON array column and the column holding each, by vendor: `{column}`
# is the job's column, `{name}` the alias of the set.
_JSON_ELEMENTS = {
    "postgresql": ("jsonb_array_elements_text({job}.{column}) AS {name}(key)", "{name}.key"),
    "sqlite": ("json_each({job}.{column}) AS {name}", "{name}.value"),
}

# The head of a server's queue: the jobs it may take now (its own or "any" jobs that fit
# it, not waiting out a backoff, not reserved by a worker unless the reservation lapsed),
# in queue order (priority, then turn: queue_app.turns, then age), as many as the
# scheduler looks at.
#
# Two heads, each read in the order of an index of its own (Job.Meta.indexes: the pending
# jobs by server, priority and age; the pending "any" jobs by priority and age) and cut at
# the look-ahead, then merged: each is an index range scan that stops after a few rows, so
# the claim costs the same with 20,000 jobs waiting as with 10. One statement with an OR
# of the two would sort every pending job of the server. With row locks, each head locks
# the rows it read (SKIP LOCKED: rows another claim holds are passed, as before), so up to
# twice the look-ahead is locked until the claim commits.
_QUEUE_HEAD = """
WITH own_head AS (
  SELECT * FROM {job}
  WHERE {job.status} = {pending}
    AND {job.server_id} = %(server_id)s
    AND {eligible}
  ORDER BY {job.priority} DESC, {job.turn} ASC, {job.created_at} ASC
  LIMIT %(lookahead)s
  {row_lock}
), any_head AS (
  SELECT * FROM {job}
  WHERE {job.status} = {pending}
    AND {job.server_id} IS NULL AND {job.target_server_alias} = {any_server}
    AND {eligible}
    AND {any_job_fits}
  ORDER BY {job.priority} DESC, {job.turn} ASC, {job.created_at} ASC
  LIMIT %(lookahead)s
  {row_lock}
)
SELECT * FROM own_head
UNION ALL
SELECT * FROM any_head
ORDER BY {job.priority} DESC, {job.turn} ASC, {job.created_at} ASC
LIMIT %(lookahead)s
"""

# Reserve a pending job of the server for the worker, unless someone else holds a live
# reservation of it (or it was taken, cancelled or moved meanwhile).
_RESERVE = """
UPDATE {job}
SET {job.lease_token} = %(token)s, {job.lease_expires_at} = %(expires)s
WHERE {job.id} = %(job_id)s
  AND {job.status} = {pending}
  AND {job.server_id} = %(server_id)s
  AND ({job.lease_token} IS NULL OR {job.lease_expires_at} < %(now)s)
"""

# A job starts on the server under a new lease (`_start_params`): a claim's update, and
# the first part of a reserved job's start.
_START_JOB = """
UPDATE {job}
SET {job.status} = %(processing)s,
    {job.server_id} = %(server_id)s,
    {job.lease_token} = %(token)s,
    {job.lease_expires_at} = %(expires)s,
    {job.started_at} = %(now)s,
    {job.updated_at} = %(now)s,
    {job.forge_session_hash} = %(task_id)s,
    {job.progress} = %(progress)s,
    {job.next_attempt_at} = NULL
WHERE {job.id} = %(job_id)s
"""

# Start the reserved job on the slot the finishing job hands over; see job_start_reserved.
# The subqueries are not correlated: each reads the rows its bound values name.
_START_RESERVED = "".join(
    (
        _START_JOB,
        """  AND {job.status} = {pending}
  AND {job.lease_token} = %(token)s
  AND ({job.expires_at} IS NULL OR {job.expires_at} > %(now)s)
  -- the finishing job is still ours; its row stays locked until this commits
  AND EXISTS (
    SELECT 1 FROM {job}
    WHERE {job.id} = %(finishing_id)s
      AND {job.status} = %(processing)s
      AND {job.lease_token} = %(finishing_token)s
    {row_lock}
  )
  -- the server is enabled, not offline, paused nor quarantined, and configured as when
  -- the job was reserved; and the queue is not paused (queue_app.control)
  AND EXISTS (
    SELECT 1 FROM {server}
    WHERE {server.id} = %(server_id)s
      AND {server.enabled}
      AND ({server.is_online} IS NULL OR {server.is_online})
      AND {server.paused_at} IS NULL
      AND {server.quarantined_at} IS NULL
      AND {server.updated_at} = %(server_updated_at)s
  )
  AND NOT EXISTS (SELECT 1 FROM {queue_state} WHERE {queue_state.paused_at} IS NOT NULL)
  -- no job of higher priority may run on the server now (the conditions of _QUEUE_HEAD,
  -- one head each: index range scans of the higher priorities)
  AND NOT EXISTS (
    SELECT 1 FROM {job}
    WHERE {job.status} = {pending}
      AND {job.server_id} = %(server_id)s
      AND {job.priority} > %(priority)s
      AND {eligible}
  )
  AND NOT EXISTS (
    SELECT 1 FROM {job}
    WHERE {job.status} = {pending}
      AND {job.server_id} IS NULL AND {job.target_server_alias} = {any_server}
      AND {job.priority} > %(priority)s
      AND {eligible}
      AND {any_job_fits}
  )
  -- nor a job queued since the reservation whose turn comes before it (another user's
  -- first job while this user's batch runs: queue_app.turns)
  AND NOT EXISTS (
    SELECT 1 FROM {job}
    WHERE {job.status} = {pending}
      AND {job.server_id} = %(server_id)s
      AND {job.priority} = %(priority)s
      AND {job.turn} < %(turn)s
      AND {job.created_at} > %(reserved_at)s
      AND {eligible}
  )
  AND NOT EXISTS (
    SELECT 1 FROM {job}
    WHERE {job.status} = {pending}
      AND {job.server_id} IS NULL AND {job.target_server_alias} = {any_server}
      AND {job.priority} = %(priority)s
      AND {job.turn} < %(turn)s
      AND {job.created_at} > %(reserved_at)s
      AND {eligible}
      AND {any_job_fits}
  )
""",
    )
)

# Whether the server may claim a job now: enabled, not offline, a slot free of running jobs
# (see server_may_claim).
_MAY_CLAIM = """
SELECT 1 FROM {server}
WHERE {server.id} = %(server_id)s
  AND {server.enabled}
  AND ({server.is_online} IS NULL OR {server.is_online})
  AND {server.paused_at} IS NULL
  AND {server.quarantined_at} IS NULL
  AND NOT EXISTS (SELECT 1 FROM {queue_state} WHERE {queue_state.paused_at} IS NOT NULL)
  AND {server.slots} > (
    SELECT COUNT(*) FROM {job}
    WHERE {job.server_id} = %(server_id)s AND {job.status} = %(processing)s
      AND (%(finishing_id)s IS NULL OR {job.id} <> %(finishing_id)s))
"""

# A claim's statements (job_claim_next). The server's row, locked: it serializes the claims
# of one server across workers.
_CLAIM_SERVER = """
SELECT * FROM {server}
WHERE {server.id} = %(server_id)s
{row_lock}
"""

# The head of the server's queue, read (and its rows locked) only if the server may claim
# now (`_MAY_CLAIM`, not counting the job whose slot the caller hands over): the
# uncorrelated EXISTS is a one-time filter, checked before any job is read. Sent after the
# server's lock is held, so it counts the job the lock's previous holder just claimed.
_CLAIM_HEAD = "\n".join(
    (
        "SELECT * FROM (",
        _QUEUE_HEAD,
        ") AS head WHERE EXISTS (",
        _MAY_CLAIM,
        ") ORDER BY {job.priority} DESC, {job.turn} ASC, {job.created_at} ASC",
    )
)

# Row locks, where the database has them (PostgreSQL).
_FOR_UPDATE = "FOR UPDATE"
_FOR_UPDATE_SKIP_LOCKED = "FOR UPDATE SKIP LOCKED"

_SYNCHRONOUS_COMMIT = {
    True: "SET synchronous_commit = off",
    False: "SET synchronous_commit = DEFAULT",
}


class _SqlNames:
    """A model's names in a statement's text: `{job}` formats as its table, `{job.status}`
    as the column of a field (by name or attname, e.g. `server_id`), quoted. A name the
    model does not have fails when the statement is first built."""

    def __init__(self, model: type[models.Model]) -> None:
        self._opts = model._meta

    def __format__(self, spec: str) -> str:
        return connection.ops.quote_name(self._opts.db_table)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        field = self._opts.get_field(name)
        if not isinstance(field, Field) or not field.column:
            raise AttributeError(f"{name} is not a column of {self._opts.db_table}")
        return connection.ops.quote_name(field.column)


# A job the server may take now, as far as times and reservations go: not waiting for its
# time (a retry's backoff, `not_before`: such a job is outside the heads' partial indexes
# until jobs_release_due clears next_attempt_at, so a claim never reads it), not past its
# `expires_at`, not reserved by a worker unless the reservation lapsed.
_ELIGIBLE = """{job.next_attempt_at} IS NULL
    AND ({job.expires_at} IS NULL OR {job.expires_at} > %(now)s)
    AND ({job.lease_token} IS NULL OR {job.lease_expires_at} < %(now)s)"""


def _literal(value: str) -> str:
    """A constant of the code (a status, the "any" alias) as an SQL string literal. Written
    into the text, not bound, so that the database sees the conditions of the partial
    indexes (SQLite matches an index's WHERE against the statement's text)."""
    text = str(value)
    assert text.isalnum(), text
    return f"'{text}'"


@cache
def _sql(template: str, *, row_lock: str = "") -> str:
    """The statement `template` with its names filled in (built once per locking clause)."""
    job, server, model = _SqlNames(Job), _SqlNames(Server), _SqlNames(CachedModel)
    queue_state = _SqlNames(QueueState)
    elements, element = _JSON_ELEMENTS.get(connection.vendor, _JSON_ELEMENTS["sqlite"])
    any_job_fits = _ANY_JOB_FITS.format(
        job=job,
        server=server,
        model=model,
        wanted=elements.format(job=job, column=job.lora_keys, name="wanted"),
        wanted_key=element.format(name="wanted"),
        required=elements.format(job=job, column=job.requirement_keys, name="required"),
        required_key=element.format(name="required"),
    )
    return template.format(
        job=job,
        server=server,
        queue_state=queue_state,
        row_lock=row_lock,
        any_job_fits=any_job_fits,
        eligible=_ELIGIBLE.format(job=job),
        pending=_literal(JobStatus.PENDING),
        any_server=_literal(ANY_SERVER),
    )


def _row_lock(clause: str) -> str:
    return clause if connection.features.has_select_for_update else ""


def _db(name: str, value: Any) -> Any:
    """`value` as the Job field `name` is written to the database."""
    field = Job._meta.get_field(name)
    assert isinstance(field, Field)
    return field.get_db_prep_save(value, connection)


def _queue_head_params(server: Server, now: datetime) -> dict[str, Any]:
    """The values that say which jobs are at the head of `server`'s queue at `now`."""
    return _queue_head_params_for(server.pk, now)


def _queue_head_params_for(server_id: int, now: datetime) -> dict[str, Any]:
    return {
        "server_id": server_id,
        "lora_kind": str(ModelKind.LORA),
        "now": _db("next_attempt_at", now),
    }


def _queue_head(server: Server, now: datetime) -> list[Job]:
    """The jobs the scheduler chooses from, unlocked (a reservation's; a claim reads and
    locks them in `_CLAIM_HEAD`)."""
    sql = _sql(_QUEUE_HEAD)
    params = {**_queue_head_params(server, now), "lookahead": scheduling.lookahead()}
    return list(Job.objects.raw(sql, params))


def job_claim_next(*, server_id: int, finishing: uuid.UUID | None = None) -> Claim | None:
    """Claim the next job for a free slot of the server, or None (no slot, no job, the
    server is disabled, offline, paused or quarantined, or the queue is paused). Safe to
    call from any number of workers at once.

    `finishing` is a job of this server that the caller holds and whose generation has
    ended (its images are being stored): its slot counts as free for the caller's claim.

    Two round trips after jobs_release_due's: the server's lock and the head of its queue
    in one; the choice made here; the claim and its commit in the other.
    """
    now = timezone.now()
    jobs_release_due(now=now)
    params = {
        **_queue_head_params_for(server_id, now),
        "lookahead": scheduling.lookahead(),
        "processing": str(JobStatus.PROCESSING),
        "finishing_id": _db("id", finishing) if finishing else None,
    }
    with _Batches() as batches:
        locked, head = batches.send(
            _sql(_CLAIM_SERVER, row_lock=_row_lock(_FOR_UPDATE)),
            _sql(_CLAIM_HEAD, row_lock=_row_lock(_FOR_UPDATE_SKIP_LOCKED)),
            params=params,
        )
        # No head when the server may not claim (gone, disabled, offline, paused,
        # quarantined, no free slot, or the queue paused) or has nothing to run.
        servers, candidates = _instances(Server, locked), _instances(Job, head)
        server = servers[0] if servers else None
        if server is None or not candidates:
            batches.send(end=True)
            return None
        job = scheduling.job_choose_next(
            candidates=candidates,
            loaded=server.loaded_checkpoint,
            checkpoints=lambda: server_checkpoints(server=server),
        )
        if job is None:
            batches.send(end=True)
            return None
        token = uuid.uuid4()
        task_id = task_id_for(job)
        claimed = _started(server, token, task_id, now)
        # Rare (a job further back has the loaded checkpoint): a statement of its own.
        _count_passed_over(scheduling.jobs_passed_over(candidates=candidates, chosen=job))
        batches.send(
            _sql(_START_JOB),
            params=_start_params(server.pk, job.pk, token, task_id, claimed),
            end=True,
        )
    for name, value in claimed.items():
        setattr(job, name, value)
    logger.info("Claimed job %s for server %s (task %s)", job.pk, server.alias, task_id)
    return Claim(job=job, server=server, token=token, task_id=task_id)


# No server has this id (ids start at 1): the statements for it match no row.
_NO_SERVER = -1


def engine_statements_warm() -> None:
    """Run a claim's statements, a reservation's read and a heartbeat's update on this
    thread's connection, for no server and no job: PostgreSQL plans them as for a real one
    (reading the job table's catalogs into this backend's caches) and changes nothing,
    except releasing the jobs whose time has come, as every claim does
    (queue_app.connections warms the worker's pool with it)."""
    job_claim_next(server_id=_NO_SERVER)
    nobody = Server(pk=_NO_SERVER)
    _queue_head(nobody, timezone.now())
    no_job = Claim(job=Job(pk=uuid.uuid4()), server=nobody, token=uuid.uuid4(), task_id="")
    job_heartbeat(claim=no_job, progress={"fraction": 0.0})


@dataclass(frozen=True)
class _Result:
    """What one statement of a batch returned: its rows (and their column names), or for a
    statement without rows, the number of rows it changed."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int


class _Batches:
    """A transaction whose statements go to the database in batches: on PostgreSQL, outside
    any transaction of the caller, each batch is one round trip (one query of several
    statements, each run as if sent alone, so each reads what committed before it: a
    statement after a lock sees the work of the lock's previous holder), the BEGIN sent
    with the first batch and the COMMIT with the last (`end`); elsewhere (SQLite, or
    inside the caller's atomic block) one statement at a time, in `transaction.atomic()`.
    Left without `end` (an error, a return), the transaction rolls back."""

    def __init__(self) -> None:
        self._batched = False
        self._atomic: Any = None
        self._open = False
        self._begin = False

    def __enter__(self) -> "_Batches":
        self._batched = (
            connection.vendor == "postgresql"
            and connection.get_autocommit()
            and not connection.in_atomic_block
        )
        if self._batched:
            self._open = self._begin = True  # BEGIN goes with the first batch
        else:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
        return self

    def send(
        self, *statements: str, params: dict[str, Any] | None = None, end: bool = False
    ) -> list[_Result]:
        """Run `statements` (sharing `params`, bound by name); their results, in order."""
        if not self._batched:
            results = []
            with connection.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql, params)
                    results.append(_result(cursor))
            return results
        parts = list(statements)
        begin = self._begin
        if begin:
            parts.insert(0, "BEGIN")
            self._begin = False
        if end:
            parts.append("COMMIT")
        results = []
        with connection.cursor() as cursor:
            cursor.execute(";\n".join(parts), params or {})
            while True:
                results.append(_result(cursor))
                if not cursor.nextset():
                    break
        if end:
            self._open = False
        return results[1 if begin else 0 : len(results) - (1 if end else 0)]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, tb)
            return
        if self._open and not self._begin:
            # Left mid-transaction: an error, or a return without `end`.
            try:
                with connection.cursor() as cursor:
                    cursor.execute("ROLLBACK")
            except DatabaseError:
                pass  # a broken connection: Django discards it before the next use


def _result(cursor: Any) -> _Result:
    if cursor.description is None:
        return _Result(columns=[], rows=[], rowcount=cursor.rowcount)
    return _Result(
        columns=[column[0] for column in cursor.description],
        rows=cursor.fetchall(),
        rowcount=cursor.rowcount,
    )


def _instances(model: type[models.Model], result: _Result) -> list[Any]:
    """The rows of `result` (each with every column of `model`'s table, by name) as
    instances of `model`, their values converted as the ORM converts them."""
    fields = model._meta.concrete_fields
    position = {column: i for i, column in enumerate(result.columns)}
    positions = [position[str(field.column)] for field in fields]
    compiler = model._default_manager.none().query.get_compiler(connection=connection)
    converters = compiler.get_converters([field.get_col(model._meta.db_table) for field in fields])
    rows: Any = ([row[i] for i in positions] for row in result.rows)
    if converters:
        rows = compiler.apply_converters(rows, converters)
    names = [field.attname for field in fields]
    return [model.from_db(connection.alias, names, list(row)) for row in rows]


def _count_passed_over(job_ids: list[uuid.UUID]) -> None:
    if job_ids:
        Job.objects.filter(pk__in=job_ids).update(passed_over=F("passed_over") + 1)


def _started(server: Server, token: uuid.UUID, task_id: str, now: datetime) -> dict[str, Any]:
    """The fields of a job that starts now on `server` under the lease `token`."""
    return {
        "status": JobStatus.PROCESSING,
        "server": server,
        "lease_token": token,
        "lease_expires_at": lease_expiry(settings.MOBILESD_LEASE_SECONDS, now=now),
        "started_at": now,
        "updated_at": now,
        "forge_session_hash": task_id,
        "progress": {"fraction": 0.0, "textinfo": "Starting"},
        "next_attempt_at": None,
    }


def _start_params(
    server_id: int, job_id: uuid.UUID, token: uuid.UUID, task_id: str, started: dict[str, Any]
) -> dict[str, Any]:
    """The values of `_START_JOB` for `started` (the fields `_started` gives)."""
    return {
        "processing": str(JobStatus.PROCESSING),
        "server_id": server_id,
        "job_id": _db("id", job_id),
        "token": _db("lease_token", token),
        "expires": _db("lease_expires_at", started["lease_expires_at"]),
        "now": _db("started_at", started["started_at"]),
        "task_id": task_id,
        "progress": _db("progress", started["progress"]),
    }


def commit_without_flush(enabled: bool) -> None:
    """Make this thread's database connection commit without waiting for the disk
    (PostgreSQL's `synchronous_commit = off`), or flush again (`enabled` False).

    For the connection of an engine loop's reserving thread only: a reservation lost in a
    PostgreSQL crash is no reservation, so the start that needs it does nothing and the
    job is claimed as usual. Claims and starts flush (the loop's own connection): a request
    goes out after each, and one lost in a crash would leave a job that is generating
    pending, to be claimed and generated again, its first run's images discarded and the
    attempt uncounted (tests/integration/test_faults.py saw it after `pg_ctl restart -m
    immediate`). Completions, which record the stored images, flush too.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_SYNCHRONOUS_COMMIT[enabled])


def job_reserve_next(*, running: Claim) -> Claim | None:
    """Choose, while `running` generates, the job its server runs next, and reserve it.

    The choice is `scheduling.job_choose_after`'s (what a claim would choose once `running`
    ends; never an "any" job). The job stays pending; `job_start_reserved` starts it when
    `running` has finished, or `job_unreserve` gives it back. A reservation that is never
    started lapses after MOBILESD_LEASE_SECONDS.
    """
    server = running.server
    now = timezone.now()
    jobs_release_due(now=now)
    candidates = _queue_head(server, now)
    job = scheduling.job_choose_after(
        running=running.job,
        candidates=candidates,
        loaded=server.loaded_checkpoint,
        checkpoints=lambda: server_checkpoints(server=server),
    )
    if job is None:
        return None
    token = uuid.uuid4()
    expires = lease_expiry(settings.MOBILESD_LEASE_SECONDS, now=now)
    params = {
        "token": _db("lease_token", token),
        "expires": _db("lease_expires_at", expires),
        "job_id": _db("id", job.pk),
        "server_id": server.pk,
        "now": _db("lease_expires_at", now),
    }
    with connection.cursor() as cursor:
        cursor.execute(_sql(_RESERVE), params)
        reserved = cursor.rowcount == 1
    if not reserved:
        return None  # taken, cancelled or reserved meanwhile: the next claim decides
    _count_passed_over(scheduling.jobs_passed_over(candidates=candidates, chosen=job))
    job.lease_token, job.lease_expires_at = token, expires
    return Claim(job=job, server=server, token=token, task_id=task_id_for(job), reserved_at=now)


def job_start_reserved(*, reserved: Claim, finishing: Claim) -> bool:
    """Start the reserved job on the slot `finishing` hands over (its generation ended,
    its images are being stored). One statement, so the server waits for no more than it.

    Conditions, all in that statement: the job is still pending and reserved by us; the
    finishing job is still processing under our lease, and its row is locked (PostgreSQL)
    so that a cancel, completion or lease recovery of it (each an update of that row) comes
    before or after this statement, never in between, and its slot cannot go to another
    claim at the same time; the server is enabled and not offline; and no job of higher
    priority than the reserved one became eligible for the server meanwhile, nor one of
    its priority with an earlier turn queued since it was reserved; and the server
    was not reconfigured since (a new URL or credentials: its request was built for the old
    machine, and a fresh claim reads the server again).

    False, and nothing changed, when any of these does not hold: the caller then gives the
    reservation back and claims as usual.
    """
    job, server = reserved.job, reserved.server
    now = timezone.now()
    started = _started(server, reserved.token, reserved.task_id, now)
    params = {
        **_queue_head_params(server, now),
        **_start_params(server.pk, reserved.job_id, reserved.token, reserved.task_id, started),
        "finishing_id": _db("id", finishing.job_id),
        "finishing_token": _db("lease_token", finishing.token),
        "priority": job.priority,
        "turn": job.turn,
        "reserved_at": _db("created_at", reserved.reserved_at or now),
        "server_updated_at": Server._meta.get_field("updated_at").get_db_prep_save(
            server.updated_at, connection
        ),
    }
    with connection.cursor() as cursor:
        cursor.execute(_sql(_START_RESERVED, row_lock=_row_lock(_FOR_UPDATE)), params)
        updated = cursor.rowcount
    if updated != 1:
        return False
    for name, value in started.items():
        setattr(job, name, value)
    logger.info("Started reserved job %s on server %s", job.pk, server.alias)
    return True


def job_unreserve(*, reserved: Claim) -> None:
    """Give back a reservation that was not started (the job stays pending)."""
    Job.objects.filter(
        pk=reserved.job_id, status=JobStatus.PENDING, lease_token=reserved.token
    ).update(lease_token=None, lease_expires_at=None)


def server_may_claim(*, server_id: int) -> bool:
    """A cheap, lock-free look (one query): is the server enabled, not offline, paused nor
    quarantined (nor the queue paused), with a free slot? Lets a redundant nudge end
    without taking the server's lock.

    The running jobs are counted in a subquery that reads only the server's processing
    jobs (an index range): a join of all its jobs would grow with its queue and history.
    In SQL, as the statements between two jobs are: it runs for every nudge and every
    server a burst of jobs starts, and the ORM took several times longer to build it than
    the database takes to run it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(_MAY_CLAIM),
            {"server_id": server_id, "processing": str(JobStatus.PROCESSING), "finishing_id": None},
        )
        return cursor.fetchone() is not None


def _ours(claim: Claim) -> Any:
    return Job.objects.filter(pk=claim.job_id, status=JobStatus.PROCESSING, lease_token=claim.token)


def job_heartbeat(
    *,
    claim: Claim,
    progress: dict[str, Any] | None,
    preview: PreviewImage | None = None,
    preview_version: int | None = None,
) -> LeaseLost | None:
    """Renew the lease (and write progress, and the live preview `preview` as version
    `preview_version`, in the same transaction). None while the job is still ours, else
    why it is not: cancelled, gone (deleted) or lost (another worker holds it); then
    nothing is written, so a preview never outlives its job's run."""
    now = timezone.now()
    values: dict[str, Any] = {
        "lease_expires_at": lease_expiry(settings.MOBILESD_LEASE_SECONDS, now=now),
    }
    if progress is not None:
        values["progress"] = progress
        values["updated_at"] = now
    if preview is not None and preview_version is not None:
        # The job's row stays locked from the UPDATE to the commit: an end of the job
        # (whose trigger deletes the preview) comes wholly before or wholly after.
        with transaction.atomic():
            if _ours(claim).update(**values):
                JobPreview.objects.bulk_create(
                    [
                        JobPreview(
                            job_id=claim.job_id,
                            image=preview.webp,
                            version=preview_version,
                            width=preview.width,
                            height=preview.height,
                            updated_at=now,
                        )
                    ],
                    update_conflicts=True,
                    unique_fields=["job"],
                    update_fields=["image", "version", "width", "height", "updated_at"],
                )
                return None
    elif _ours(claim).update(**values):
        return None
    status = Job.objects.filter(pk=claim.job_id).values_list("status", flat=True).first()
    return lease_lost_reason(exists=status is not None, cancelled=status == JobStatus.CANCELLED)


@dataclass(frozen=True)
class ImageRecord:
    """An image already written to storage, to be recorded with the job's completion."""

    index: int
    name: str
    seed: int | None
    width: int | None
    height: int | None
    infotext: str


def job_complete(
    *,
    claim: Claim,
    images: list[ImageRecord],
    generation_info: dict[str, Any],
    checkpoint: str | None = None,
    loras: tuple[str, ...] | list[str] = (),
) -> bool:
    """Record the images and mark the job completed, if it is still ours. `checkpoint`:
    the title of the checkpoint it ran on (`result_details.checkpoint`; None: not known);
    `loras`: the server's names of the LoRAs its prompt sent (`result_details.loras`, only
    when there were some).

    False when the job was cancelled, deleted or taken over meanwhile: the caller then
    deletes the files it wrote, so a job's images are stored exactly once.
    """
    now = timezone.now()
    details = {
        "images": [image.name.rsplit("/", 1)[-1] for image in images],
        "info": "Job completed and images downloaded by MobileSD backend.",
        "generation_info": generation_info,
        "checkpoint": checkpoint,
    }
    if loras:
        details["loras"] = list(loras)
    with transaction.atomic():
        updated = _ours(claim).update(
            status=JobStatus.COMPLETED,
            result_details=details,
            completed_at=now,
            updated_at=now,
            lease_token=None,
            lease_expires_at=None,
            progress={"fraction": 1.0, "textinfo": "Done"},
        )
        if not updated:
            return False
        JobImage.objects.bulk_create(
            JobImage(
                job_id=claim.job_id,
                index=image.index,
                file=image.name,
                seed=image.seed,
                width=image.width,
                height=image.height,
                infotext=image.infotext,
            )
            for image in images
        )
    logger.info("Job %s completed with %d image(s)", claim.job_id, len(images))
    return True


def job_fail(
    *, claim: Claim, error: str, code: str | None = None, details: dict[str, Any] | None = None
) -> bool:
    """processing -> failed with `result_details.error`, if the job is still ours; `code`
    (a stable name of the reason, e.g. `checkpoint_mismatch`) and `details` go beside it."""
    now = timezone.now()
    result: dict[str, Any] = {**(details or {}), "error": error}
    if code is not None:
        result["code"] = code
    updated = _ours(claim).update(
        status=JobStatus.FAILED,
        result_details=result,
        completed_at=now,
        updated_at=now,
        lease_token=None,
        lease_expires_at=None,
        progress=None,
    )
    if updated:
        logger.warning("Job %s failed: %s", claim.job_id, error)
    return bool(updated)


def _requeue(
    jobs: Any, *, job: Job, error: str, count_attempt: bool, backoff: bool = True
) -> str | None:
    """Shared by release and lease expiry: back to pending, or failed past the retry limit.

    A counted attempt waits out the backoff unless `backoff` is off (a dead worker is no
    reason to wait). Returns the new status, or None when the job had changed meanwhile.
    """
    now = timezone.now()
    attempt = job.retry_count + (1 if count_attempt else 0)
    cleared: dict[str, Any] = {
        "lease_token": None,
        "lease_expires_at": None,
        "progress": None,
        "updated_at": now,
    }
    if count_attempt and attempt > settings.MOBILESD_MAX_RETRIES:
        updated = jobs.update(
            status=JobStatus.FAILED,
            retry_count=attempt - 1,
            completed_at=now,
            result_details={
                "error": f"Gave up after {attempt} attempts. Last error: {error}",
                "attempts": attempt,
            },
            **cleared,
        )
        return JobStatus.FAILED if updated else None
    delay = (
        backoff_seconds(
            attempt,
            base=settings.MOBILESD_RETRY_BACKOFF_SECONDS,
            cap=settings.MOBILESD_RETRY_BACKOFF_MAX_SECONDS,
        )
        if count_attempt and backoff
        else 0.0
    )
    values = {
        **cleared,
        "status": JobStatus.PENDING,
        "retry_count": attempt,
        "next_attempt_at": now + timedelta(seconds=delay) if delay else None,
        "result_details": {"last_error": error, "retry_in_seconds": delay}
        if count_attempt
        else None,
    }
    if job.target_server_alias == ANY_SERVER:
        values["server"] = None  # free to run elsewhere next time
    updated = jobs.update(**values)
    return JobStatus.PENDING if updated else None


def job_release(*, claim: Claim, error: str, count_attempt: bool) -> str | None:
    """Give a job back to the queue after a failure that may pass.

    `count_attempt`: the job reached the server (counted in retry_count, with backoff); a job
    that never reached it (server offline) goes back without counting.
    """
    job = Job.objects.filter(pk=claim.job_id).first()
    if job is None:
        return None
    status = _requeue(_ours(claim), job=job, error=error, count_attempt=count_attempt)
    if status:
        logger.info("Job %s back to %s: %s", claim.job_id, status, error)
    return status


@dataclass(frozen=True)
class Orphan:
    """A processing job whose worker stopped renewing its lease."""

    job_id: uuid.UUID
    server_id: int | None
    task_id: str | None
    status: str


def jobs_recover_expired_leases() -> list[Orphan]:
    """Requeue (or fail, past the retry limit) every processing job whose lease lapsed.

    The attempt counts in retry_count. Its task may still be running on the server; the
    caller interrupts it there (its images would have gone to the dead worker).
    """
    now = timezone.now()
    recovered = []
    expired = Job.objects.filter(status=JobStatus.PROCESSING, lease_expires_at__lt=now)
    for job in expired:
        with transaction.atomic():
            same = Job.objects.filter(
                pk=job.pk, status=JobStatus.PROCESSING, lease_token=job.lease_token
            )
            status = _requeue(
                same,
                job=job,
                error="The worker running this job stopped.",
                count_attempt=True,
                backoff=False,
            )
        if status:
            logger.warning("Job %s lost its worker; now %s", job.pk, status)
            recovered.append(Orphan(job.pk, job.server_id, job.forge_session_hash, status))
    return recovered


# --- Jobs whose time has come, or gone ----------------------------------------------------
#
# A pending job with next_attempt_at set (a retry's backoff, a `not_before`) is outside the
# heads' partial indexes, so however many wait for later, a claim reads none of them. Once
# due, clearing next_attempt_at puts the job in them; a pending job past its expires_at
# fails `expired`. Both are found through partial indexes of their own (job_pending_waiting,
# job_pending_expiry): when nothing is due, one statement of two index probes.

_ANY_DUE = """
SELECT
  EXISTS (SELECT 1 FROM {job} WHERE {job.status} = {pending}
          AND {job.next_attempt_at} IS NOT NULL AND {job.next_attempt_at} <= %(now)s),
  EXISTS (SELECT 1 FROM {job} WHERE {job.status} = {pending}
          AND {job.expires_at} IS NOT NULL AND {job.expires_at} <= %(now)s)
"""

# Rows another transaction holds (a claim, a cancel) are skipped: the next call takes them.
_RELEASE_DUE = """
UPDATE {job} SET {job.next_attempt_at} = NULL
WHERE {job.status} = {pending} AND {job.id} IN (
  SELECT {job.id} FROM {job}
  WHERE {job.status} = {pending}
    AND {job.next_attempt_at} IS NOT NULL AND {job.next_attempt_at} <= %(now)s
  {row_lock}
)
"""

_EXPIRE_DUE = """
UPDATE {job}
SET {job.status} = %(failed)s,
    {job.result_details} = %(details)s,
    {job.completed_at} = %(now)s,
    {job.updated_at} = %(now)s,
    {job.lease_token} = NULL,
    {job.lease_expires_at} = NULL,
    {job.progress} = NULL
WHERE {job.status} = {pending} AND {job.id} IN (
  SELECT {job.id} FROM {job}
  WHERE {job.status} = {pending}
    AND {job.expires_at} IS NOT NULL AND {job.expires_at} <= %(now)s
  {row_lock}
)
"""

EXPIRED_DETAILS = {
    "error": "The job could not start before its expiry time (expires_at).",
    "code": "expired",
}


def jobs_release_due(*, now: datetime | None = None) -> tuple[int, int]:
    """Let the pending jobs whose time has come be claimed (clear next_attempt_at), and fail
    `expired` those still pending past their expires_at; returns how many of each.

    Called before every claim and reservation, and by the reconcile task (which covers a
    queue no worker is running, e.g. of an offline server). Idempotent; safe from any
    number of workers at once.
    """
    now = now or timezone.now()
    params: dict[str, Any] = {"now": _db("next_attempt_at", now)}
    with connection.cursor() as cursor:
        cursor.execute(_sql(_ANY_DUE), params)
        row = cursor.fetchone()
    any_released, any_expired = (bool(value) for value in row) if row else (False, False)
    released = expired = 0
    lock = _row_lock(_FOR_UPDATE_SKIP_LOCKED)
    if any_released:
        with connection.cursor() as cursor:
            cursor.execute(_sql(_RELEASE_DUE, row_lock=lock), params)
            released = cursor.rowcount
    if any_expired:
        params.update(failed=str(JobStatus.FAILED), details=_db("result_details", EXPIRED_DETAILS))
        with connection.cursor() as cursor:
            cursor.execute(_sql(_EXPIRE_DUE, row_lock=lock), params)
            expired = cursor.rowcount
        if expired:
            logger.warning("%d pending job(s) expired before they could start", expired)
    return released, expired
