"""The worker's PostgreSQL connections: a pool, its connections warmed before jobs come.

Each thread of a server loop uses a database connection of its own: the loop's, its jobs'
monitor's, and those of the threads that reserve the next job and store the last one's
images (`CONNECTIONS_PER_SERVER`). Opened when a burst of jobs starts them, each
connection costs PostgreSQL a new backend (about 2 ms of its CPU) and its first
statements more again (3.5-4 ms above a warm backend's 0.5-0.7 ms: the job table's
catalogs and its indexes, read into the new backend's caches), for every server at once,
while those servers wait for their first requests (bench/README.md, "Many servers").

So a worker on PostgreSQL keeps its connections in a pool (psycopg_pool, through Django's
OPTIONS["pool"]) with room for every thread it may run (`worker_pool_options`), and once
it is ready opens as many as its enabled servers would use at once and runs the claim's
statements on each (`worker_connections_warm`). They stay open between bursts (the pool's
`min_size`); one the pool replaces (after `max_lifetime`, an hour) warms again on first
use. `WORKER_DATABASE_POOL=false` turns this off (e.g. behind PgBouncer): each thread then
opens its own connection and closes it when its work ends, as before.
"""

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from psycopg import Connection
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

# The database connections of one running server loop: its own thread's, its jobs'
# monitor's, its reserving thread's and its storing thread's.
CONNECTIONS_PER_SERVER = 4
# Beyond the loops': the heartbeat's, the notifications' fan-out, other tasks' threads.
SPARE_CONNECTIONS = 8


def worker_pool_options(concurrency: int) -> dict[str, Any]:
    """The pool of a worker with `concurrency` threads: room for a server loop on each of
    them (a thread never waits for a connection another holds), opened one at first; dead
    connections (a database restart) found before a thread gets one; each one's session
    reset when it comes back."""
    return {
        "min_size": 1,
        "max_size": CONNECTIONS_PER_SERVER * concurrency + SPARE_CONNECTIONS,
        "timeout": settings.DATABASE_POOL_TIMEOUT,
        "check": ConnectionPool.check_connection,
        "reset": reset_session,
    }


def reset_session(conn: Connection[Any]) -> None:
    """Undo what a worker's thread may set for its session, before another thread gets the
    connection: the reserving thread commits without waiting for the disk
    (queue_app.dispatch.commit_without_flush), which claims and completions must not."""
    conn.execute("RESET synchronous_commit")


def warm_count(*, servers: int, concurrency: int) -> int:
    """How many connections `servers` enabled servers use at once on a worker with
    `concurrency` threads (a server loop holds a thread)."""
    return CONNECTIONS_PER_SERVER * min(servers, concurrency)


def worker_connections_warm(*, servers: int, concurrency: int) -> int:
    """Open and warm the connections `servers` enabled servers would use at once, in the
    pool kept for them (nothing without a pool); the number warmed."""
    pool: ConnectionPool | None = getattr(connection, "pool", None)  # PostgreSQL's only
    count = warm_count(servers=servers, concurrency=concurrency)
    if pool is None or count == 0:
        return 0
    # Within the pool's room (`worker_pool_options`): four a thread at most.
    pool.resize(min_size=count, max_size=pool.max_size)
    started = time.monotonic()
    warmed = connections_warm(count)
    logger.info(
        "Warmed %d database connections for %d enabled servers in %.1f s",
        warmed,
        servers,
        time.monotonic() - started,
    )
    return warmed


def connections_warm(count: int) -> int:
    """Run the engine's statements on `count` connections at once, each on a thread of its
    own that holds its connection until all have one (so that with a pool they are
    `count` different ones); the number that ran them."""
    from queue_app.dispatch import engine_statements_warm

    gate = threading.Barrier(count, timeout=settings.DATABASE_POOL_TIMEOUT + 5)
    warmed = []

    def warm() -> None:
        try:
            try:
                connection.ensure_connection()
            except DatabaseError:
                gate.abort()  # the others stop waiting for this one
                raise
            gate.wait()
            engine_statements_warm()
            warmed.append(1)
        except (DatabaseError, threading.BrokenBarrierError) as exc:
            logger.warning("Could not warm a database connection: %s", exc or "another failed")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=warm, name=f"warm-connection-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(warmed)
