"""The changes-since feed of the lists (`?updated_since=`), read from the event log.

A cursor is an event's public id. The rows changed after it are the subjects of the events
after it that the key may see: a job's own events for the job list, a batch's and its
jobs' (they carry its id) for the batch list, a download's for the download list. They are
answered as the list serializes them, their state now, in the order of their first event
after the cursor; a page stops before the first event of a subject beyond the limit, and
its `next_cursor` is the event just before: every event up to it is of a row answered, so
nothing is skipped, and a row answered may come again (its later events), which a client
applying answers in order takes in its stride.

Nothing that commits while the feed is read is lost: the events and the rows are read in
one snapshot (core_app.pagination.one_snapshot), and the head that ends the answer is read
before the events. A change whose event had no public id yet when the snapshot was taken
gets one above that head (events_app.sequencer), so the next answer has it.
"""

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from core_app.changes import Changes, Subject
from core_app.errors import MobileSDError
from core_app.pagination import one_snapshot
from events_app.models import Event
from events_app.selectors import events_head, events_pruned_through, events_visible
from events_app.sequencer import events_sequence

# Events read per query, and at most per answer (a job's thousands of progress events are
# one row: past this many, the answer ends there and says has_more).
CHUNK = 2000
MAX_EVENTS = 20000


class EventFeed:
    """core_app.changes.ChangeFeed over the event log (installed by events_app.apps)."""

    def catch_up(self) -> None:
        # A probe of the unsequenced events' index first: a list need not take the
        # sequencer's lock when there is nothing to number.
        if Event.objects.filter(seq__isnull=True).exists():
            events_sequence()

    def head(self) -> int:
        return events_head()

    def changes(
        self, *, subject: Subject, rows: QuerySet, after: int, owner_id: int | None, limit: int
    ) -> Changes:
        # Numbered now, the events committed so far are in this answer, not the next.
        self.catch_up()
        with one_snapshot():
            head = events_head()
            if after > head:
                raise MobileSDError(
                    f"updated_since {after} is beyond the newest event ({head}): pass 0 or "
                    "a next_cursor MobileSD answered.",
                    code="invalid_cursor",
                )
            pruned = events_pruned_through()
            if after < pruned:
                raise MobileSDError(
                    f"The events after {after} have been pruned (through {pruned}): start "
                    "again from updated_since=0.",
                    code="cursor_expired",
                    status_code=410,
                )
            changed, gone, next_cursor, has_more = _changed_subjects(
                subject, after=after, until=head, owner_id=owner_id, limit=limit
            )
            found = {row.pk: row for row in rows.filter(pk__in=changed)}
        return Changes(
            rows=[found[pk] for pk in changed if pk in found],
            # Only ids whose deletion the key may see: a row merely out of reach is not
            # "deleted" (and its own events would say so, later).
            deleted=[str(pk) for pk in changed if pk in gone and pk not in found],
            next_cursor=next_cursor,
            has_more=has_more,
        )


def _changed_subjects(
    subject: Subject, *, after: int, until: int, owner_id: int | None, limit: int
) -> tuple[list[UUID], set[UUID], int, bool]:
    """(the subjects of the events in (after, until], in the order of their first, at most
    `limit`; those of them with a `<subject>.deleted` event; the cursor after the events
    taken; whether events are left)."""
    column = f"{subject}_id"
    deleted_type = f"{subject}.deleted"
    subjects: dict[UUID, None] = {}
    gone: set[UUID] = set()
    events = _events(column, after=after, until=until, owner_id=owner_id)
    for taken, (seq, subject_id, kind) in enumerate(events, start=1):
        if subject_id not in subjects:
            if len(subjects) == limit:
                return list(subjects), gone, seq - 1, True
            subjects[subject_id] = None
        if kind == deleted_type:
            gone.add(subject_id)
        if taken == MAX_EVENTS and seq < until:
            return list(subjects), gone, seq, True
    return list(subjects), gone, until, False


def _events(
    column: str, *, after: int, until: int, owner_id: int | None
) -> Iterator[tuple[int, Any, str]]:
    """(seq, subject id, type) of the visible events of subject `column` in (after, until],
    in order, read a chunk at a time."""
    events = events_visible(
        Event.objects.filter(seq__lte=until, **{f"{column}__isnull": False}), owner_id=owner_id
    )
    position = after
    while True:
        chunk = list(
            events.filter(seq__gt=position)
            .order_by("seq")
            .values_list("seq", column, "type")[:CHUNK]
        )
        yield from chunk
        if len(chunk) < CHUNK:
            return
        position = chunk[-1][0]
