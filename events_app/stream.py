"""The event stream's fan-out inside one web process: one hub per event loop reads each new
event once and hands it to every stream whose filters it matches.

Not a database connection per client: on PostgreSQL the hub LISTENs on one connection of
its own (psycopg, autocommit) to the triggers' RAW_CHANNEL, numbers the new events
(events_sequence) and to the sequencer's CHANNEL (another process numbered them); then it
reads what is new once (events_after, every owner's) on one thread with one Django
connection. A safety poll every MOBILESD_EVENTS_SAFETY_POLL_SECONDS numbers and reads too,
so a notification lost while the listener reconnects (a database restart) delays events
but loses none. SQLite has no LISTEN: the hub polls every MOBILESD_EVENTS_POLL_SECONDS,
and only while a stream is open.

Each stream has a bounded queue of rendered messages; one that falls more than
MOBILESD_EVENTS_CLIENT_BUFFER events behind (a client that stopped reading) is ended with a
last message instead of growing: it reconnects with its Last-Event-ID and reads the rest
from the log.

Where a stream starts: it subscribes first, then reads the head (the hub has read, or will
hand it, everything after the hub's position, which is never above that head), then
replays from the log up to that head, then takes the live events above it. So nothing
falls between the replay and the live events, and the seq says what is a duplicate.
"""

import asyncio
import contextlib
import contextvars
import json
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection

from events_app.messages import event_envelope, event_message
from events_app.models import Event
from events_app.selectors import event_matches, events_after, events_head
from events_app.sequencer import events_sequence
from events_app.triggers import CHANNEL, RAW_CHANNEL

logger = logging.getLogger(__name__)

# Events read per query by the hub, and replayed per query by a stream.
PAGE = 500
# How long the listener waits for a reconnect attempt, at most.
MAX_BACKOFF = 10.0


def sse_message(*, event: str, data: Any, id: int | None = None) -> bytes:
    """One Server-Sent Events message (JSON data on one line)."""
    head = f"id: {id}\n" if id is not None else ""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def event_sse(event: Event) -> bytes:
    try:
        data = event_message(event)
    except Exception:  # a snapshot it cannot read must not stop every stream at this event
        logger.exception("Events: cannot render event %s (%s)", event.seq, event.type)
        try:  # the message without its subject: its ids still say what changed
            data = event_envelope(event)
        except Exception:
            data = {"id": event.seq, "type": event.type}
    return sse_message(id=event.seq, event=event.type, data=data)


@dataclass(eq=False)
class Subscriber:
    """One open stream: what it may see and asked for, and the messages waiting for it."""

    owner_id: int | None
    job_ids: set[UUID] = field(default_factory=set)
    batch_ids: set[UUID] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    queue: asyncio.Queue[tuple[int, bytes] | None] = field(default_factory=asyncio.Queue)
    # Why the hub ended the stream ("lagging", "shutdown"); None while it is open.
    closed: str | None = None

    def matches(self, event: Event) -> bool:
        return event_matches(
            event,
            owner_id=self.owner_id,
            job_ids=self.job_ids,
            batch_ids=self.batch_ids,
            types=self.types,
        )

    def offer(self, seq: int, message: bytes, limit: int) -> None:
        if self.closed is not None:
            return
        if self.queue.qsize() >= limit:
            self.close("lagging")
            return
        self.queue.put_nowait((seq, message))

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.queue.put_nowait(None)  # wakes the stream; the queue has no bound of its own


def _in_db[T](work: Callable[[], T]) -> T:
    """Database work on the hub's thread; a failed connection is dropped, so that the next
    call opens a new one (after a database restart)."""
    try:
        return work()
    except (DatabaseError, InterfaceError):
        connection.close()
        raise


def _close_connection() -> None:
    connection.close()


def _read_after(position: int) -> list[tuple[Event, bytes]]:
    events = events_after(position, owner_id=None, limit=PAGE)
    return [(event, event_sse(event)) for event in events]


def _listen_conninfo() -> str:
    from psycopg.conninfo import make_conninfo

    params = connection.settings_dict
    options = {
        key: value
        for key, value in (params.get("OPTIONS") or {}).items()
        if isinstance(value, str | int) and key not in ("isolation_level", "server_side_binding")
    }
    given = {
        "dbname": params.get("NAME") or None,
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
        "host": params.get("HOST") or None,
        "port": str(params["PORT"]) if params.get("PORT") else None,
        "application_name": "mobilesd-events",
        "connect_timeout": 10,
    }
    return make_conninfo("", **{**given, **options})  # the operator's options win


class EventHub:
    """The fan-out of one event loop (one per web process in production)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: set[Subscriber] = set()
        self.position = 0  # every event up to here has been handed out
        self.registrations = 0
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.sequence_due = False
        self.listening = False
        self.connections = 0  # how often the listener connected (and LISTENed)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="events-hub")
        self.task: asyncio.Task[None] | None = None
        self.listener: asyncio.Task[None] | None = None
        self.notify = connection.vendor == "postgresql" and settings.MOBILESD_EVENTS_NOTIFY

    async def db[T](self, work: Callable[[], T]) -> T:
        return await self.loop.run_in_executor(self.executor, partial(_in_db, work))

    def start(self) -> None:
        if self.task is None:
            # A context of its own: not the request's that happened to start it (its
            # thread-sensitive executor and log fields end with that request).
            self.task = self.loop.create_task(self._run(), context=contextvars.Context())

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Start handing `subscriber` every event above the hub's position from now on."""
        self.start()
        await self.ready.wait()
        if not self.subscribers:
            await self._skip_to_head()  # idle until now: nothing to hand out below the head
        self.registrations += 1
        self.subscribers.add(subscriber)
        self.wake.set()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def close_all(self, reason: str) -> None:
        for subscriber in list(self.subscribers):
            subscriber.close(reason)

    async def _skip_to_head(self) -> None:
        # Only if no stream subscribed meanwhile: one that did may need what lies below.
        registrations = self.registrations
        head = await self.db(events_head)
        if self.registrations == registrations:
            self.position = max(self.position, head)

    async def _run(self) -> None:
        backoff = 0.5
        while not self.ready.is_set():
            try:
                self.position = await self.db(events_head)
                self.ready.set()
            except (DatabaseError, InterfaceError) as exc:
                logger.warning("Events: cannot read the head (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        if self.notify:
            self.listener = self.loop.create_task(self._listen(), context=contextvars.Context())
        while True:
            timed_out = False
            try:
                await asyncio.wait_for(self.wake.wait(), self._period())
            except TimeoutError:
                timed_out = True
            self.wake.clear()
            try:
                # Without notifications every poll may find events to number.
                await self._round(sequence=self.sequence_due or timed_out or not self.notify)
            except (DatabaseError, InterfaceError) as exc:
                logger.warning("Events: reading new events failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self.wake.set()
            except Exception:
                # Never let the process's streams stall for good on one bad round.
                logger.exception("Events: a round of the hub failed; retrying")
                await asyncio.sleep(1.0)
                self.wake.set()

    def _period(self) -> float | None:
        if self.notify:
            return float(settings.MOBILESD_EVENTS_SAFETY_POLL_SECONDS)
        return float(settings.MOBILESD_EVENTS_POLL_SECONDS) if self.subscribers else None

    async def _round(self, *, sequence: bool) -> None:
        if connection.vendor == "postgresql" and sequence:
            self.sequence_due = False
            await self.db(events_sequence)
        if not self.subscribers:
            await self._skip_to_head()
            return
        limit = int(settings.MOBILESD_EVENTS_CLIENT_BUFFER)
        while True:
            page = await self.db(partial(_read_after, self.position))
            for event, message in page:
                for subscriber in list(self.subscribers):
                    if subscriber.closed is None and subscriber.matches(event):
                        subscriber.offer(event.seq or 0, message, limit)
                self.position = max(self.position, event.seq or 0)
            if len(page) < PAGE:
                return

    async def _listen(self) -> None:
        import psycopg

        backoff = 0.5
        safety = float(settings.MOBILESD_EVENTS_SAFETY_POLL_SECONDS)
        while True:
            try:
                conninfo = await self.db(_listen_conninfo)
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {RAW_CHANNEL}")
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not self.listening:
                        logger.info("Events: listening for notifications")
                    self.listening, backoff = True, 0.5
                    self.connections += 1
                    # Whatever was committed while no one listened.
                    self.sequence_due = True
                    self.wake.set()
                    while True:
                        async for note in conn.notifies(timeout=safety):
                            self._notified(note.channel, note.payload)
                        # A quiet while: make sure the connection is still there.
                        await asyncio.wait_for(conn.execute("SELECT 1"), timeout=10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect, the safety poll covers
                if self.listening:
                    logger.warning("Events: the listener lost its connection (%s)", exc)
                self.listening = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == RAW_CHANNEL:
            self.sequence_due = True
            self.wake.set()
        elif channel == CHANNEL:
            try:
                head = int(payload)
            except ValueError:
                head = self.position + 1
            if head > self.position:
                self.wake.set()

    async def stop(self) -> None:
        """End every stream, the hub's tasks, and its database connection."""
        self.close_all("shutdown")
        for task in (self.listener, self.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            # A callable run on the hub's thread: `connection` is that thread's there.
            await self.loop.run_in_executor(self.executor, _close_connection)
        self.executor.shutdown(wait=False)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub]" = (
    weakref.WeakKeyDictionary()
)


def events_hub() -> EventHub:
    """The hub of the running event loop (made the first time a stream asks)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub(loop)
    return hub


async def events_streams_close(reason: str = "shutdown") -> None:
    """End the running loop's streams with a last message (the web process is stopping)."""
    hub = _hubs.get(asyncio.get_running_loop())
    if hub is not None:
        hub.close_all(reason)


async def events_hub_stop() -> None:
    """Stop the running loop's hub altogether (tests; a stopping process)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.stop()
