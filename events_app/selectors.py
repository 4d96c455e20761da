"""Reading the event log: what a reader may see after its cursor, in order."""

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db.models import Max, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Greatest

from events_app.models import Event, EventLog


def events_head() -> int:
    """The highest public id there is: the cursor to start from for what comes next (one
    query: every list answer reads it)."""
    pruned = EventLog.objects.filter(pk=1).values("pruned_through")
    return Event.objects.filter(seq__isnull=False).aggregate(
        head=Greatest(Coalesce(Max("seq"), 0), Coalesce(Subquery(pruned), 0))
    )["head"]


def events_pruned_through() -> int:
    """Events up to this public id may have been pruned: a cursor below it has gaps."""
    return EventLog.objects.filter(pk=1).values_list("pruned_through", flat=True).first() or 0


def events_visible(events: QuerySet[Event], *, owner_id: int | None) -> QuerySet[Event]:
    """The events a key of user `owner_id` may see (None: an admin key, everything): its
    user's, and everyone's (servers, the queue)."""
    if owner_id is None:
        return events
    return events.filter(Q(owner_id=owner_id) | Q(owner_id__isnull=True))


def events_after(
    after: int,
    *,
    owner_id: int | None,
    job_ids: Iterable[UUID] = (),
    batch_ids: Iterable[UUID] = (),
    types: Iterable[str] = (),
    limit: int = 1000,
    until: int | None = None,
) -> list[Event]:
    """The events after public id `after` (up to `until`, if given), oldest first, that a key
    of `owner_id` may see, narrowed to these jobs, batches (their own events and their
    jobs') and types (an exact type, or a prefix ending in "." such as "job.")."""
    events = events_visible(Event.objects.filter(seq__gt=after), owner_id=owner_id)
    if until is not None:
        events = events.filter(seq__lte=until)
    events = narrowed(events, job_ids=job_ids, batch_ids=batch_ids, types=types)
    return list(events.order_by("seq")[:limit])


def narrowed(
    events: QuerySet[Event],
    *,
    job_ids: Iterable[UUID] = (),
    batch_ids: Iterable[UUID] = (),
    types: Iterable[str] = (),
) -> QuerySet[Event]:
    jobs, batches, kinds = list(job_ids), list(batch_ids), list(types)
    if jobs or batches:
        subject = Q()
        if jobs:
            subject |= Q(job_id__in=jobs)
        if batches:
            subject |= Q(batch_id__in=batches)
        events = events.filter(subject)
    if kinds:
        match = Q()
        for kind in kinds:
            match |= Q(type__startswith=kind) if kind.endswith(".") else Q(type=kind)
        events = events.filter(match)
    return events


def event_matches(
    event: Any,
    *,
    owner_id: int | None,
    job_ids: set[UUID],
    batch_ids: set[UUID],
    types: set[str],
) -> bool:
    """`events_after`'s filters, for one event in memory (a live stream's)."""
    if owner_id is not None and event.owner_id is not None and event.owner_id != owner_id:
        return False
    if (job_ids or batch_ids) and not (
        (event.job_id is not None and event.job_id in job_ids)
        or (event.batch_id is not None and event.batch_id in batch_ids)
    ):
        return False
    return not types or any(
        event.type.startswith(kind) if kind.endswith(".") else event.type == kind for kind in types
    )
