"""Public ids for events, in an order no reader can see change.

A sequence value taken inside a transaction would not do: two writers take 10 and 11, the
one with 11 commits first, a reader sees 11 and moves its cursor there, and 10 appears
later, below the cursor, never to be read. So the triggers write events without a public
id, and `events_sequence` gives the committed ones theirs, one sequencer at a time (an
advisory lock): every id it gives is above every id given before, to events already
committed, so a reader that has seen N never finds a new event below N. Events one change
caused after another (a job's start, then its progress) are numbered in that order: the
second was written after the first committed, so no sequencer sees it without the first.

SQLite needs none of this: its writers take turns, and a trigger numbers each event as it
is written (events_app.triggers).

Who sequences: whoever reads (the stream's listener in each web process, on each
notification, the changes-since feed, webhook delivery), so new events are numbered within
moments of their commit; a sequencer with nothing to do costs one index probe.
"""

from django.db import connection, transaction

from events_app.models import Event, EventLog
from events_app.triggers import CHANNEL

# pg_advisory_xact_lock's key: one sequencer at a time.
SEQUENCE_LOCK = 0x6576656E7473  # "events"
# Events numbered per statement at most (a batch of thousands takes a few rounds).
CHUNK = 5000

_SEQUENCE = """
WITH todo AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n
    FROM {events} WHERE seq IS NULL ORDER BY id LIMIT %s
), base AS (
    SELECT GREATEST(
        COALESCE((SELECT MAX(seq) FROM {events}), 0),
        COALESCE((SELECT pruned_through FROM {log} WHERE id = 1), 0)
    ) AS head
)
UPDATE {events} SET seq = base.head + todo.n
FROM todo, base WHERE {events}.id = todo.id
RETURNING {events}.seq
"""


def events_sequence() -> int:
    """Give the committed events without a public id theirs (PostgreSQL; nothing to do on
    SQLite); the number numbered. Runs in its own transaction: call it outside one."""
    if connection.vendor != "postgresql":
        return 0
    quote = connection.ops.quote_name
    sql = _SEQUENCE.format(events=quote(Event._meta.db_table), log=quote(EventLog._meta.db_table))
    numbered = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # Its own statement: the UPDATE's snapshot is then taken once the lock is held,
            # and sees what the sequencer before this one numbered.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCE_LOCK])
            cursor.execute(sql, [CHUNK])
            rows = cursor.fetchall()
            if rows:
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(max(s for (s,) in rows))])
        numbered += len(rows)
        if len(rows) < CHUNK:
            return numbered
