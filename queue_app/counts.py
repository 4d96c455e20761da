"""Exact job counts without counting the jobs: the `total` of the job list, the admin's
changelist and the dashboard, at a cost that does not grow with the history.

Database triggers on the job table (PostgreSQL and SQLite) write a +1 row into
queue_app_jobcount for the key (status, server, target, owner) of every job inserted, a -1
row for every job deleted, and both for a job whose key changes, in the transaction of that
change: every writer is caught, the ORM's `.update()`s, the engine's raw SQL, a server's
deletion (SET NULL) and a bulk delete alike. The rows are only ever inserted, so no writer
waits for another on a shared counter row; `job_counts_fold` (a beat task) folds them into
one row per key. The number of jobs of a key is the sum of its rows' `n`: one statement,
one snapshot, so a total is the exact count of a committed state (READ COMMITTED is
enough). Which columns make the key: `KEY`; a filter on anything else is counted with
COUNT(*) (`counted_total` returns None).

Why rows appended, not one counter row per key updated in place: an UPDATE of a shared row
holds its lock until commit, so every submit of a user (or, per status alone, of everyone)
would queue behind the one before, and two transactions moving jobs in opposite directions
(pending -> processing, processing -> pending) would lock two rows in opposite orders and
deadlock. An INSERT locks nothing another writer needs: a change costs one or two small
index inserts in its own transaction, and writers never wait on each other here. The reads
pay instead, a few rows more per change since the last fold: at a fold every 30 s that is
bounded by the changes of 30 s.

A TRUNCATE of the jobs (PostgreSQL) empties the counts too. SQLite drops a table's
triggers when Django rebuilds the table (an ALTER it cannot do in place), so
`job_counts_install` runs after every `migrate` (post_migrate, QueueConfig.ready) and
recounts whenever it had to create them.
"""

from collections.abc import Iterable
from typing import Any

from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet, Sum
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, In, IsNull
from django.db.models.sql.where import AND
from django.utils.functional import cached_property

from queue_app.models import Job, JobCount

# The job's columns a count is kept by (the count table's own: `target` is computed).
KEY = ("status", "server_id", "owner_id")
TRIGGERS = (
    "queue_app_job_count_insert",
    "queue_app_job_count_delete",
    "queue_app_job_count_update",
)
PG_TRUNCATE_TRIGGER = "queue_app_job_count_truncate"
# Only one fold at a time (pg_advisory_xact_lock's key): two would wait on each other's rows.
FOLD_LOCK = 0x6A6F62636F756E74  # "jobcount"


def _tables() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {"job": quote(Job._meta.db_table), "counts": quote(JobCount._meta.db_table)}


def _q(template: str, **names: Any) -> str:
    """`template` with the tables' quoted names (`{job}`, `{counts}`) and `names` (our own
    constants, never a value from outside) in place."""
    return template.format(**_tables(), **names)


_ROW = (
    "INSERT INTO {counts} (status, server_id, target, owner_id, n) VALUES "
    "({side}.status, {side}.server_id, "
    "CASE WHEN {side}.server_id IS NULL THEN {side}.target_server_alias ELSE '' END, "
    "{side}.owner_id, {n});"
)


def _row(side: str, n: int) -> str:
    """The count row of the job `side` (NEW or OLD), +1 or -1."""
    return _q(_ROW, side=side, n=n)


# A job's key changed: not a lease renewal or progress write (the WHEN keeps those cheap).
_KEY_CHANGED = (
    "OLD.status {ne} NEW.status OR OLD.server_id {ne} NEW.server_id "
    "OR OLD.owner_id {ne} NEW.owner_id "
    "OR (NEW.server_id IS NULL AND OLD.target_server_alias {ne} NEW.target_server_alias)"
)
_KEY_COLUMNS = "status, server_id, target_server_alias, owner_id"

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION queue_app_job_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN {old} END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN {new} END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION queue_app_job_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {counts}; RETURN NULL; END $$;
"""


def _postgresql_sql() -> list[str]:
    function = _q(_PG_FUNCTION, old=_row("OLD", -1), new=_row("NEW", 1))
    changed = _KEY_CHANGED.format(ne="IS DISTINCT FROM")
    job = _tables()["job"]
    return [
        function,
        *(f"DROP TRIGGER IF EXISTS {name} ON {job}" for name in (*TRIGGERS, PG_TRUNCATE_TRIGGER)),
        f"CREATE TRIGGER queue_app_job_count_insert AFTER INSERT ON {job} "
        "FOR EACH ROW EXECUTE FUNCTION queue_app_job_count()",
        f"CREATE TRIGGER queue_app_job_count_delete AFTER DELETE ON {job} "
        "FOR EACH ROW EXECUTE FUNCTION queue_app_job_count()",
        f"CREATE TRIGGER queue_app_job_count_update AFTER UPDATE OF {_KEY_COLUMNS} ON {job} "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION queue_app_job_count()",
        f"CREATE TRIGGER {PG_TRUNCATE_TRIGGER} AFTER TRUNCATE ON {job} "
        "FOR EACH STATEMENT EXECUTE FUNCTION queue_app_job_count_truncate()",
    ]


def _sqlite_sql() -> list[str]:
    job = _tables()["job"]
    old, new = _row("OLD", -1), _row("NEW", 1)
    changed = _KEY_CHANGED.format(ne="IS NOT")
    return [
        *(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS),
        f"CREATE TRIGGER queue_app_job_count_insert AFTER INSERT ON {job} BEGIN {new} END",
        f"CREATE TRIGGER queue_app_job_count_delete AFTER DELETE ON {job} BEGIN {old} END",
        f"CREATE TRIGGER queue_app_job_count_update AFTER UPDATE OF {_KEY_COLUMNS} ON {job} "
        f"WHEN {changed} BEGIN {old} {new} END",
    ]


def _installed(conn: BaseDatabaseWrapper) -> set[str]:
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass",
                [Job._meta.db_table],
            )
        else:
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [Job._meta.db_table],
            )
        return {name for (name,) in cursor.fetchall()}


_RECOUNT = (
    "INSERT INTO {counts} (status, server_id, target, owner_id, n) "
    "SELECT status, server_id, "
    "CASE WHEN server_id IS NULL THEN target_server_alias ELSE '' END, owner_id, COUNT(*) "
    "FROM {job} GROUP BY 1, 2, 3, 4"
)


def _recount(cursor: Any) -> None:
    cursor.execute(_q("DELETE FROM {counts}"))
    cursor.execute(_q(_RECOUNT))


def job_counts_install(*, force: bool = False) -> bool:
    """Create the triggers if any is missing (or `force`), and then recount every key from
    the jobs, with writes to the jobs held off meanwhile; True if it did. Otherwise only
    drops the counts left by a flush that emptied the jobs without truncating (SQLite)."""
    if connection.vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"job counts need triggers of {connection.vendor}")
    postgresql = connection.vendor == "postgresql"
    expected = {*TRIGGERS, PG_TRUNCATE_TRIGGER} if postgresql else set(TRIGGERS)
    with transaction.atomic(), connection.cursor() as cursor:
        if not force and expected <= _installed(connection):
            cursor.execute(_q("DELETE FROM {counts} WHERE NOT EXISTS (SELECT 1 FROM {job})"))
            return False
        if postgresql:
            # Writers wait until the triggers and the recount commit, so none is missed;
            # and no fold runs meanwhile (its folded rows would be counted twice).
            cursor.execute(_q("LOCK TABLE {job} IN SHARE ROW EXCLUSIVE MODE"))
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
        for statement in _postgresql_sql() if postgresql else _sqlite_sql():
            cursor.execute(statement)
        _recount(cursor)
    return True


def job_counts_drop() -> None:
    """Drop the triggers (the migration's reverse); the counts go stale from then on."""
    job = _tables()["job"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for name in (*TRIGGERS, PG_TRUNCATE_TRIGGER):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {job}")
            cursor.execute("DROP FUNCTION IF EXISTS queue_app_job_count()")
            cursor.execute("DROP FUNCTION IF EXISTS queue_app_job_count_truncate()")
        else:
            for name in TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


# One statement, one snapshot: the rows it deletes are the rows it sums.
_PG_FOLD = """
WITH gone AS (
    DELETE FROM {counts}
    WHERE (status, COALESCE(server_id, -1), target, owner_id) IN (
        SELECT status, COALESCE(server_id, -1), target, owner_id FROM {counts}
        GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1
    )
    RETURNING status, server_id, target, owner_id, n
)
INSERT INTO {counts} (status, server_id, target, owner_id, n)
SELECT status, server_id, target, owner_id, SUM(n) FROM gone
GROUP BY status, server_id, target, owner_id HAVING SUM(n) <> 0
"""
# SQLite has one writer at a time (IMMEDIATE transactions): the rows up to `last` stay put.
_SQLITE_GROUPS = (
    "SELECT status, COALESCE(server_id, -1), target, owner_id FROM {counts} "
    "WHERE id <= %(last)s GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1"
)
_SQLITE_FOLD = (
    "INSERT INTO {counts} (status, server_id, target, owner_id, n) "
    "SELECT status, server_id, target, owner_id, SUM(n) FROM {counts} WHERE id <= %(last)s "
    "GROUP BY status, server_id, target, owner_id HAVING COUNT(*) > 1 AND SUM(n) <> 0",
    "DELETE FROM {counts} WHERE id <= %(last)s "
    "AND (status, COALESCE(server_id, -1), target, owner_id) IN ({groups})",
)


def job_counts_fold() -> int:
    """Fold the count rows into one per key (none for a key with no jobs); the sums stay
    what they were for every reader. Returns how many rows the table lost."""
    with transaction.atomic(), connection.cursor() as cursor:
        before = JobCount.objects.count()  # the counts table only: a few rows per key
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
            cursor.execute(_q(_PG_FOLD))
        else:
            last = JobCount.objects.order_by("-id").values_list("id", flat=True).first() or 0
            for statement in _SQLITE_FOLD:
                cursor.execute(_q(statement, groups=_q(_SQLITE_GROUPS)), {"last": last})
        return before - JobCount.objects.count()


def job_total(**key: Any) -> int:
    """How many jobs have these values of `KEY` columns (`status`, `server_id`, `owner_id`,
    each a value, a list of values (`__in`) or None for no server)."""
    total = JobCount.objects.filter(**key).aggregate(total=Sum("n"))["total"]
    return int(total or 0)


def job_totals_by(*columns: str, **key: Any) -> dict[tuple[Any, ...], int]:
    """The number of jobs of each value of `columns` (of the count table: `status`,
    `server_id`, `target`, `owner_id`) among the jobs with these `key` values, as
    {(value, ...): n}; values with no jobs are left out."""
    rows = JobCount.objects.filter(**key).order_by().values_list(*columns).annotate(total=Sum("n"))
    return {tuple(row[:-1]): int(row[-1]) for row in rows if row[-1]}


def _filter_of(node: Any, base_table: str) -> tuple[str, Any] | None:
    """`node` of a WHERE clause as a filter of `job_total`, or None if it is not one."""
    if not isinstance(node, (Exact, In, IsNull)) or not isinstance(node.lhs, Col):
        return None
    column = node.lhs.target.column
    if node.lhs.alias != base_table or column not in KEY:
        return None
    if isinstance(node, IsNull):
        return (column, None) if node.rhs is True and column == "server_id" else None
    values = node.rhs if isinstance(node, In) else [node.rhs]
    if not isinstance(values, Iterable) or isinstance(values, (str, QuerySet)):
        return None
    values = [getattr(value, "pk", value) for value in values]
    if not all(isinstance(value, (str, int)) for value in values):
        return None  # an expression or a subquery
    return (f"{column}__in", values) if isinstance(node, In) else (column, values[0])


def counted_total(queryset: QuerySet[Job]) -> int | None:
    """The number of jobs `queryset` matches, from the counts, when its filters are only
    ones of `KEY` columns (equal to a value, one of values, no server), ANDed; else None
    (count them). Ordering, select_related and prefetches do not change a count."""
    query = queryset.query
    if (
        query.model is not Job
        or query.distinct
        or query.combinator
        or query.low_mark
        or query.high_mark is not None
        or query.extra
    ):
        return None
    where = query.where
    if where.connector != AND or where.negated:
        return None
    filters: dict[str, Any] = {}
    for child in where.children:
        found = _filter_of(child, query.base_table)
        if found is None or found[0] in filters:
            return None
        filters[found[0]] = found[1]
    return job_total(**filters)


def job_list_count(queryset: QuerySet[Job]) -> int:
    """The exact number of jobs `queryset` matches: from the counts when they can answer,
    else COUNT(*)."""
    total = counted_total(queryset)
    return queryset.count() if total is None else total


class JobCountPaginator(Paginator):
    """The admin's paginator of jobs: its count from the counts when the changelist's
    filters are ones they can answer (status, server), else COUNT(*)."""

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return job_list_count(self.object_list)
        return super().count
