"""The triggers that write the event log: one per table and operation, on PostgreSQL and
SQLite, in the transaction of the change itself.

Triggers rather than calls in the services, because every writer must be caught: the
services' conditional updates, the engine's, a bulk cancel, an admin action, a server's
deletion (SET NULL on its jobs) and the reconcile task alike; and because an event then
commits, or rolls back, with its change. Which columns make a change an event is in each
table's `watched` list: a lease renewal or a health check's timestamp is not one.

PostgreSQL: each trigger also NOTIFYs `RAW_CHANNEL`, delivered only when the transaction
commits, so that a listener sequences the new events at once (events_app.sequencer).
SQLite: a last trigger gives each event its public id as it is written (writers there take
turns, so the order they write in is the order they commit in).

SQLite drops a table's triggers when Django rebuilds the table (an ALTER it cannot do in
place), and refuses to rebuild a table that another table's triggers name; so there the
triggers are dropped before a `migrate` with work to do (pre_migrate) and
`event_triggers_install` runs after every `migrate` (post_migrate; events_app.apps).
"""

from dataclasses import dataclass
from typing import ClassVar

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from civitai_app.models import Download
from events_app.models import Event
from queue_app.models import Batch, Job, JobStatus, QueueState
from servers_app.models import Server

# NOTIFYed (at commit) by every event trigger on PostgreSQL: "there are new events".
RAW_CHANNEL = "mobilesd_events_raw"
# NOTIFYed by the sequencer once new events have public ids; the payload is the new head.
CHANNEL = "mobilesd_events"

_JOB_STATUS_TYPE = (
    "CASE {s}.status WHEN 'pending' THEN 'job.queued' WHEN 'processing' THEN 'job.started' "
    "WHEN 'completed' THEN 'job.completed' WHEN 'failed' THEN 'job.failed' "
    "WHEN 'cancelled' THEN 'job.cancelled' ELSE 'job.updated' END"
)
_DOWNLOAD_STATUS_TYPE = (
    "CASE {s}.status WHEN 'pending' THEN 'download.queued' "
    "WHEN 'downloading' THEN 'download.started' WHEN 'verifying' THEN 'download.verifying' "
    "WHEN 'completed' THEN 'download.completed' WHEN 'failed' THEN 'download.failed' "
    "WHEN 'cancelled' THEN 'download.cancelled' ELSE 'download.updated' END"
)


@dataclass(frozen=True)
class _Vendor:
    """What differs between the two databases' SQL."""

    ne: str  # "is distinct from"
    obj: str  # building a JSON object
    json_col: str  # a JSON column's value inside that object: {c}
    bool_col: str  # a boolean column's value: {c}
    path: str  # a JSON column's member: {c}, {key}
    now: str

    def json(self, *pairs: tuple[str, str]) -> str:
        return f"{self.obj}({', '.join(f"'{key}', {value}" for key, value in pairs)})"


_PG = _Vendor(
    ne="IS DISTINCT FROM",
    obj="jsonb_build_object",
    json_col="{c}",
    bool_col="{c}",
    path="({c} -> '{key}')",
    now="now()",
)
_SQLITE = _Vendor(
    ne="IS NOT",
    obj="json_object",
    json_col="json({c})",
    bool_col="CASE WHEN {c} IS NULL THEN NULL WHEN {c} THEN json('true') ELSE json('false') END",
    path="json_extract({c}, '$.{key}')",
    now="strftime('%Y-%m-%d %H:%M:%f', 'now')",
)


@dataclass(frozen=True)
class _Table:
    """The events of one table: which columns are watched, each operation's event type, and
    what each event records (`row` is NEW or OLD)."""

    name: str  # the table
    watched: tuple[str, ...]  # an UPDATE is an event only when one of these changed

    def insert_type(self, v: _Vendor) -> str:
        raise NotImplementedError

    def update_type(self, v: _Vendor) -> str:
        raise NotImplementedError

    def delete_type(self, v: _Vendor) -> str:
        raise NotImplementedError

    # What each event records in `data`, in this order: the row's columns of these names,
    # JSON ones and booleans written as JSON (`expression` may compute one instead).
    recorded: ClassVar[tuple[str, ...]] = ()
    json_columns: ClassVar[frozenset[str]] = frozenset()
    bool_columns: ClassVar[frozenset[str]] = frozenset()

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        """The event's subject columns (job_id, owner_id, ...) from `row`."""
        raise NotImplementedError

    def expression(self, v: _Vendor, row: str, name: str) -> str:
        """The SQL of the recorded value `name` of `row`."""
        if name in self.json_columns:
            return v.json_col.format(c=f"{row}.{name}")
        if name in self.bool_columns:
            return v.bool_col.format(c=f"{row}.{name}")
        return f"{row}.{name}"

    def pairs(self, v: _Vendor, row: str) -> tuple[tuple[str, str], ...]:
        """(name, SQL) of each recorded value of `row`."""
        return tuple((name, self.expression(v, row, name)) for name in self.recorded)

    def data(self, v: _Vendor, row: str) -> str:
        return v.json(*self.pairs(v, row))


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


class _Jobs(_Table):
    def insert_type(self, v: _Vendor) -> str:
        return _JOB_STATUS_TYPE.format(s="NEW")

    def update_type(self, v: _Vendor) -> str:
        preview_old = v.path.format(c="OLD.progress", key="preview_id")
        preview_new = v.path.format(c="NEW.progress", key="preview_id")
        return (
            f"CASE WHEN OLD.status {v.ne} NEW.status THEN {_JOB_STATUS_TYPE.format(s='NEW')} "
            f"WHEN NEW.status = 'processing' AND {preview_old} {v.ne} {preview_new} "
            "THEN 'job.preview' "
            f"WHEN OLD.progress {v.ne} NEW.progress THEN 'job.progress' ELSE 'job.updated' END"
        )

    def delete_type(self, v: _Vendor) -> str:
        return "'job.deleted'"

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        return {
            "job_id": f"{row}.id",
            "batch_id": f"{row}.batch_id",
            "server_id": f"{row}.server_id",
            "owner_id": f"{row}.owner_id",
        }

    recorded = (
        "status",
        "target_server_alias",
        "forge_session_hash",
        "retry_count",
        "priority",
        "progress",
        "result_details",
        "created_at",
        "updated_at",
        "completed_at",
        "not_before",
        "expires_at",
    )
    json_columns = frozenset({"progress", "result_details"})

    def expression(self, v: _Vendor, row: str, name: str) -> str:
        if name != "target_server_alias":
            return super().expression(v, row, name)
        # The server's current alias (it may have been renamed), else the one asked for.
        server = _q(Server._meta.db_table)
        return (
            f"COALESCE((SELECT alias FROM {server} WHERE id = {row}.server_id), "  # noqa: S608
            f"{row}.target_server_alias)"
        )


class _Batches(_Table):
    def insert_type(self, v: _Vendor) -> str:
        return "'batch.created'"

    def update_type(self, v: _Vendor) -> str:
        return "'batch.updated'"

    def delete_type(self, v: _Vendor) -> str:
        return "'batch.deleted'"

    recorded = ("name", "target_server_alias", "priority", "job_count", "created_at")

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        return {"batch_id": f"{row}.id", "owner_id": f"{row}.owner_id"}


# --- batch.finished -----------------------------------------------------------------------
# Once the last unfinished job of a batch reaches a finished status, in that change's
# transaction; again after a retry reopened it and it finished again. Only a job's move
# from unfinished to finished can finish its batch (a deleted job, a batch emptied, do not).

_FINISHED = tuple(
    str(status) for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
)
_FINISHED_SQL = ", ".join(f"'{status}'" for status in _FINISHED)


def _unfinished_jobs(batch_id: str) -> str:
    """SQL: whether the batch `batch_id` (an SQL expression) has a job not finished."""
    jobs = _q(Job._meta.db_table)
    return (
        f"EXISTS (SELECT 1 FROM {jobs} WHERE batch_id = {batch_id} "  # noqa: S608
        f"AND status NOT IN ({_FINISHED_SQL}))"
    )


def _batch_finished_insert(v: _Vendor, batch_id: str) -> str:
    """INSERT ... SELECT of the batch.finished event of batch `batch_id` (an SQL
    expression), with its jobs' counts by status, and no row when it has no such batch
    (nor when it has an unfinished job)."""
    jobs = _q(Job._meta.db_table)

    def count(status: str | None) -> str:
        where = f" AND status = '{status}'" if status else ""
        return f"(SELECT COUNT(*) FROM {jobs} WHERE batch_id = b.id{where})"  # noqa: S608

    counts = v.json(*((status, count(status)) for status in _FINISHED), ("total", count(None)))
    batch = _Batches(Batch._meta.db_table, ())
    data = v.json(
        *((name, batch.expression(v, "b", name)) for name in batch.recorded), ("counts", counts)
    )
    names = ", ".join(("type", *_EVENT_COLUMNS, "data", "created_at"))
    columns = {"batch_id": "b.id", "owner_id": "b.owner_id"}
    values = ", ".join(
        ("'batch.finished'", *(columns.get(name, "NULL") for name in _EVENT_COLUMNS), data, v.now)
    )
    return (
        f"INSERT INTO {_q(Event._meta.db_table)} ({names}) "  # noqa: S608
        f"SELECT {values} FROM {_q(Batch._meta.db_table)} b "
        f"WHERE b.id = {batch_id} AND NOT {_unfinished_jobs(batch_id)};"
    )


# PostgreSQL: a statement-level trigger, after the row triggers' job events, so that a bulk
# cancel's one batch.finished comes after all its job.cancelled. Under READ COMMITTED two
# transactions finishing a batch's last two jobs would each see the other's job unfinished:
# so each first locks the batch row (FOR NO KEY UPDATE: a job's foreign-key check, KEY
# SHARE, does not wait for it) and counts after it, in a new snapshot that sees the other's
# committed change. Batches are locked in id order, so two such statements cannot deadlock.
BATCH_FINISHED_TRIGGER = "events_batch_finished"


def _batch_finished_postgresql_sql() -> list[str]:
    jobs, batches = _q(Job._meta.db_table), _q(Batch._meta.db_table)
    function = BATCH_FINISHED_TRIGGER
    return [
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    finished_batch uuid;
    emitted boolean := false;
BEGIN
    FOR finished_batch IN
        SELECT DISTINCT n.batch_id FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.batch_id IS NOT NULL AND n.status IN ({_FINISHED_SQL})
            AND o.status NOT IN ({_FINISHED_SQL})
        ORDER BY n.batch_id
    LOOP
        PERFORM 1 FROM {batches} WHERE id = finished_batch FOR NO KEY UPDATE;
        {_batch_finished_insert(_PG, "finished_batch")}
        IF FOUND THEN
            emitted := true;
        END IF;
    END LOOP;
    IF emitted THEN
        PERFORM pg_notify('{RAW_CHANNEL}', '');
    END IF;
    RETURN NULL;
END $$""",  # noqa: S608
        f"DROP TRIGGER IF EXISTS {BATCH_FINISHED_TRIGGER} ON {jobs}",
        f"CREATE TRIGGER {BATCH_FINISHED_TRIGGER} AFTER UPDATE ON {jobs} "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def _batch_finished_sqlite() -> str:
    """SQLite: a statement of the jobs' update trigger, after its job event. Row triggers
    fire as each row changes, so in a bulk cancel only the batch's last row finds no
    unfinished job; writers take turns, so there is no race."""
    return (
        f"{_batch_finished_insert(_SQLITE, 'NEW.batch_id')[:-1]} "
        f"AND OLD.status NOT IN ({_FINISHED_SQL}) AND NEW.status IN ({_FINISHED_SQL});"
    )


class _Servers(_Table):
    def insert_type(self, v: _Vendor) -> str:
        return "'server.added'"

    def update_type(self, v: _Vendor) -> str:
        return (
            f"CASE WHEN OLD.is_online {v.ne} NEW.is_online THEN "
            "(CASE WHEN NEW.is_online THEN 'server.online' "
            "WHEN NOT NEW.is_online THEN 'server.offline' ELSE 'server.updated' END) "
            f"WHEN OLD.paused_at {v.ne} NEW.paused_at THEN "
            "(CASE WHEN NEW.paused_at IS NULL THEN 'server.resumed' ELSE 'server.paused' END) "
            f"WHEN OLD.quarantined_at {v.ne} NEW.quarantined_at THEN "
            "(CASE WHEN NEW.quarantined_at IS NULL THEN 'server.released' "
            "ELSE 'server.quarantined' END) "
            "ELSE 'server.updated' END"
        )

    def delete_type(self, v: _Vendor) -> str:
        return "'server.deleted'"

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        return {"server_id": f"{row}.id"}

    recorded = (
        "alias",
        "enabled",
        "is_online",
        "slots",
        "paused_at",
        "quarantined_at",
        "quarantine_reason",
        "last_error",
    )
    bool_columns = frozenset({"enabled", "is_online"})


class _QueueState(_Table):
    def insert_type(self, v: _Vendor) -> str:
        return "CASE WHEN NEW.paused_at IS NULL THEN 'queue.resumed' ELSE 'queue.paused' END"

    def update_type(self, v: _Vendor) -> str:
        return self.insert_type(v)

    def delete_type(self, v: _Vendor) -> str:
        return "'queue.resumed'"

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        return {}

    recorded = ("paused_at",)

    def expression(self, v: _Vendor, row: str, name: str) -> str:
        # A deleted row (no row: not paused) was not paused.
        return "NULL" if row == "OLD" else super().expression(v, row, name)


class _Downloads(_Table):
    def insert_type(self, v: _Vendor) -> str:
        return _DOWNLOAD_STATUS_TYPE.format(s="NEW")

    def update_type(self, v: _Vendor) -> str:
        return (
            f"CASE WHEN OLD.status {v.ne} NEW.status THEN "
            f"{_DOWNLOAD_STATUS_TYPE.format(s='NEW')} "
            f"WHEN OLD.bytes_done {v.ne} NEW.bytes_done OR OLD.size_bytes {v.ne} NEW.size_bytes "
            "THEN 'download.progress' ELSE 'download.updated' END"
        )

    def delete_type(self, v: _Vendor) -> str:
        return "'download.deleted'"

    def columns(self, v: _Vendor, row: str) -> dict[str, str]:
        return {"download_id": f"{row}.id", "owner_id": f"{row}.owner_id"}

    recorded = (
        "status",
        "file_name",
        "model_name",
        "version_name",
        "model_type",
        "model_version_id",
        "size_bytes",
        "bytes_done",
        "speed_bytes_per_second",
        "error",
        "error_code",
        "attempts",
        "created_at",
        "updated_at",
        "finished_at",
    )


def _tables() -> list[_Table]:
    return [
        _Jobs(
            Job._meta.db_table,
            (
                "status",
                "progress",
                "priority",
                "generation_params",
                "server_id",
                "target_server_alias",
                "not_before",
                "expires_at",
                "result_details",
                "retry_count",
                "batch_id",
            ),
        ),
        _Batches(Batch._meta.db_table, ("name", "priority", "job_count")),
        _Servers(
            Server._meta.db_table,
            (
                "alias",
                "enabled",
                "is_online",
                "slots",
                "paused_at",
                "quarantined_at",
                "api_url",
                "models_dir",
            ),
        ),
        _QueueState(QueueState._meta.db_table, ("paused_at",)),
        _Downloads(
            Download._meta.db_table,
            ("status", "bytes_done", "size_bytes", "error", "attempts"),
        ),
    ]


_EVENT_COLUMNS = ("job_id", "batch_id", "server_id", "download_id", "owner_id")


def _insert(table: _Table, v: _Vendor, kind: str, row: str) -> str:
    """The INSERT of one event of `table` whose type is the SQL expression `kind`."""
    columns = table.columns(v, row)
    names = ", ".join(("type", *_EVENT_COLUMNS, "data", "created_at"))
    values = ", ".join(
        (kind, *(columns.get(name, "NULL") for name in _EVENT_COLUMNS), table.data(v, row), v.now)
    )
    return f"INSERT INTO {_q(Event._meta.db_table)} ({names}) VALUES ({values});"  # noqa: S608


def _changed(table: _Table, v: _Vendor) -> str:
    return " OR ".join(f"OLD.{c} {v.ne} NEW.{c}" for c in table.watched)


def _trigger_names(table: _Table) -> list[str]:
    return [f"events_{table.name}_{op}" for op in ("insert", "update", "delete")]


def _postgresql_sql() -> list[str]:
    v = _PG
    statements: list[str] = []
    for table in _tables():
        function = f"events_{table.name}"
        statements.append(
            f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN {_insert(table, v, table.insert_type(v), "NEW")}
    ELSIF TG_OP = 'UPDATE' THEN {_insert(table, v, table.update_type(v), "NEW")}
    ELSE {_insert(table, v, table.delete_type(v), "OLD")}
    END IF;
    PERFORM pg_notify('{RAW_CHANNEL}', '');
    RETURN NULL;
END $$"""
        )
        insert, update, delete = _trigger_names(table)
        quoted = _q(table.name)
        for name in (insert, update, delete):
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {quoted}")
        statements += [
            f"CREATE TRIGGER {insert} AFTER INSERT ON {quoted} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()",
            f"CREATE TRIGGER {update} AFTER UPDATE OF {', '.join(table.watched)} ON {quoted} "
            f"FOR EACH ROW WHEN ({_changed(table, v)}) EXECUTE FUNCTION {function}()",
            f"CREATE TRIGGER {delete} AFTER DELETE ON {quoted} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        ]
    return statements + _batch_finished_postgresql_sql()


SQLITE_SEQUENCE_TRIGGER = "events_app_event_sequence"


def _sqlite_sql() -> list[str]:
    v = _SQLITE
    statements: list[str] = []
    for table in _tables():
        insert, update, delete = _trigger_names(table)
        quoted = _q(table.name)
        statements += [f"DROP TRIGGER IF EXISTS {name}" for name in (insert, update, delete)]
        statements += [
            f"CREATE TRIGGER {insert} AFTER INSERT ON {quoted} "
            f"BEGIN {_insert(table, v, table.insert_type(v), 'NEW')} END",
            f"CREATE TRIGGER {update} AFTER UPDATE OF {', '.join(table.watched)} ON {quoted} "
            f"WHEN {_changed(table, v)} "
            f"BEGIN {_insert(table, v, table.update_type(v), 'NEW')}"
            f"{_batch_finished_sqlite() if isinstance(table, _Jobs) else ''} END",
            f"CREATE TRIGGER {delete} AFTER DELETE ON {quoted} "
            f"BEGIN {_insert(table, v, table.delete_type(v), 'OLD')} END",
        ]
    events = _q(Event._meta.db_table)
    statements += [
        f"DROP TRIGGER IF EXISTS {SQLITE_SEQUENCE_TRIGGER}",
        # The id is AUTOINCREMENT (never reused, even after a prune); writers take turns.
        f"CREATE TRIGGER {SQLITE_SEQUENCE_TRIGGER} AFTER INSERT ON {events} "  # noqa: S608
        f"WHEN NEW.seq IS NULL BEGIN UPDATE {events} SET seq = NEW.id WHERE id = NEW.id; END",
    ]
    return statements


def _expected() -> set[str]:
    names = {name for table in _tables() for name in _trigger_names(table)}
    if connection.vendor == "postgresql":
        return {*names, BATCH_FINISHED_TRIGGER}
    return {*names, SQLITE_SEQUENCE_TRIGGER}


def _installed(conn: BaseDatabaseWrapper) -> set[str]:
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'events\\_%%'")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cursor.fetchall()}


def event_triggers_install(*, force: bool = False) -> bool:
    """Create the triggers if any is missing (or `force`); True if it did."""
    if connection.vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"events need triggers of {connection.vendor}")
    if not force and _expected() <= _installed(connection):
        return False
    statements = _postgresql_sql() if connection.vendor == "postgresql" else _sqlite_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return True


def event_triggers_drop() -> None:
    """Drop the triggers (the migration's reverse): changes are no longer recorded."""
    with connection.cursor() as cursor:
        for table in _tables():
            for name in _trigger_names(table):
                on = f" ON {_q(table.name)}" if connection.vendor == "postgresql" else ""
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP FUNCTION IF EXISTS events_{table.name}()")
        if connection.vendor == "postgresql":
            jobs = _q(Job._meta.db_table)
            cursor.execute(f"DROP TRIGGER IF EXISTS {BATCH_FINISHED_TRIGGER} ON {jobs}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {BATCH_FINISHED_TRIGGER}()")
        if connection.vendor == "sqlite":
            cursor.execute(f"DROP TRIGGER IF EXISTS {SQLITE_SEQUENCE_TRIGGER}")
