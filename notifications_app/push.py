"""Push notifications from events: which targets hear of an event, and what they are told.

`push_for_events` is the handler the event fan-out (notifications_app's delivery from the
event log) calls inside its transaction: for each job.completed, job.failed and
batch.finished event, one outbox row (PushMessage) per enabled target of the subject's
owner that wants that type, sent by Celery once the transaction commits. A target only
ever hears of its own user's work: the rows are chosen by the event's owner.

The message is written when the event is fanned out (the job as it was then), short, for a
phone's lock screen: a title naming the prompt, a body with the server, the time taken,
the image count and a link (the first image's signed link, which opens without a key).
"""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Max
from django.urls import reverse
from django.utils import timezone

from events_app.models import Event
from notifications_app.models import PUSH_EVENT_TYPES, PushMessage, PushState, PushTarget
from notifications_app.push_tasks import push_send_on_commit
from queue_app.links import job_image_links, job_image_names, public_link
from queue_app.models import Batch, Job, JobStatus

__all__ = ["PushText", "batch_message", "job_message", "notify_user", "push_for_events"]

TITLE_PROMPT_CHARS = 60
ERROR_CHARS = 200

PushText = tuple[str, str, str]  # (title, body, link)


def _excerpt(text: str, limit: int) -> str:
    """The text on one line, cut at a word near `limit` characters, with an ellipsis."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    if " " in cut[limit // 2 :]:  # end at a word when one ends in the second half
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:") + "…"


def duration_text(seconds: float) -> str:
    """A time taken as a person says it: "8 s", "3 min 20 s", "2 h 5 min"."""
    total = max(round(seconds), 0)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return duration_text((end - start).total_seconds())


def _public(path: str) -> str:
    """An absolute link on MOBILESD_PUBLIC_URL, or "" without one (a phone cannot follow a
    bare path)."""
    return public_link(path) if settings.MOBILESD_PUBLIC_URL else ""


def _job_link(job: Job) -> str:
    """Where the notification leads: its first image, by a signed link that opens without
    an API key (queue_app.links, valid MOBILESD_SIGNED_LINK_SECONDS), else the job's page
    in MobileSD's admin; nothing without MOBILESD_PUBLIC_URL."""
    if not settings.MOBILESD_PUBLIC_URL:
        return ""
    if job.status == JobStatus.COMPLETED and (links := job_image_links(job)):
        return str(links[0]["url"])
    return _public(reverse("admin:queue_app_job_change", args=[job.pk]))


def _lines(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def job_message(job: Job) -> PushText:
    """(title, body, link) of a finished job's notification."""
    prompt = _excerpt(job.prompt, TITLE_PROMPT_CHARS) or f"job {job.short_id}"
    link = _job_link(job)
    took = _between(job.started_at, job.completed_at or timezone.now())
    if job.status == JobStatus.COMPLETED:
        images = len(job_image_names(job))
        count = f"{images} image{'s' if images != 1 else ''}"
        facts = " · ".join(part for part in (job.server_alias, took, count) if part)
        return f"Done: {prompt}", _lines(facts, link), link
    error = (job.error_text.strip().splitlines() or ["no reason given"])[0]
    facts = " · ".join(part for part in (job.server_alias, took) if part)
    return (
        f"Failed: {prompt}",
        _lines(facts, f"Error: {_excerpt(error, ERROR_CHARS)}", link),
        link,
    )


def batch_message(batch: Batch, counts: dict[str, Any] | None = None) -> PushText:
    """(title, body, link) of a finished batch's notification: its jobs' counts by status
    (`counts`, as the batch.finished event recorded them, else as they are now) and the
    time from its submission to its last job's end."""
    if not isinstance(counts, dict):
        counts = dict(
            Job.objects.filter(batch=batch)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
    last = Job.objects.filter(batch=batch).aggregate(last=Max("completed_at"))["last"]
    order = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
    tally = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "no jobs"
    took = _between(batch.created_at, last)
    link = _public(reverse("admin:queue_app_batch_change", args=[batch.pk]))
    name = _excerpt(batch.name, TITLE_PROMPT_CHARS) or f"batch {str(batch.pk)[:8]}"
    facts = " · ".join(part for part in (batch.server_alias, took) if part)
    return f"Batch done: {name}", _lines(tally, facts, link), link


def _messages_for(events: Iterable[Event]) -> dict[int, tuple[Event, PushText, Any]]:
    """Event id -> (event, its text, the job whose thumbnail goes with it or None)."""
    events = list(events)
    job_ids = {e.job_id for e in events if e.type.startswith("job.") and e.job_id}
    batch_ids = {e.batch_id for e in events if e.type.startswith("batch.") and e.batch_id}
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=job_ids).select_related("server")}
    batches = {b.pk: b for b in Batch.objects.filter(pk__in=batch_ids).select_related("server")}
    found: dict[int, tuple[Event, PushText, Any]] = {}
    for event in events:
        if event.type.startswith("job."):
            job = jobs.get(event.job_id) if event.job_id else None
            # A job deleted, or retried, since (its status is no longer the event's): its
            # own later events tell the rest.
            if job is not None and event.type == f"job.{job.status}":
                thumbnail = job.pk if job_image_names(job) else None
                found[event.pk] = (event, job_message(job), thumbnail)
        else:
            batch = batches.get(event.batch_id) if event.batch_id else None
            if batch is not None:
                found[event.pk] = (event, batch_message(batch, event.data.get("counts")), None)
    return found


def push_for_events(events: Sequence[Event]) -> None:
    """An outbox row per enabled target of the event's owner wanting its type, for each
    job.completed / job.failed / batch.finished event; sent once the caller's transaction
    commits. Fanning out the same event again adds nothing (one row per target and event)."""
    # An event without its public id yet is not the fan-out's to deliver (and the id is
    # what makes a second fan-out of it a no-op).
    wanted = [
        e
        for e in events
        if e.type in PUSH_EVENT_TYPES and e.owner_id is not None and e.seq is not None
    ]
    if not wanted:
        return
    targets: dict[int, list[PushTarget]] = {}
    for target in PushTarget.objects.filter(
        owner_id__in={e.owner_id for e in wanted}, enabled=True
    ):
        targets.setdefault(target.owner_id, []).append(target)
    wanted = [
        e for e in wanted if any(e.type in t.events for t in targets.get(e.owner_id or 0, ()))
    ]
    if not wanted:
        return
    now = timezone.now()
    rows = [
        PushMessage(
            target=target,
            event_seq=event.seq,
            event_type=event.type,
            job_id=job_id,
            title=title[:250],
            body=body,
            link=link,
            next_attempt_at=now,
        )
        for event, (title, body, link), job_id in _messages_for(wanted).values()
        for target in targets.get(event.owner_id or 0, ())
        if event.type in target.events
    ]
    PushMessage.objects.bulk_create(rows, ignore_conflicts=True)
    # ignore_conflicts leaves the new rows without their ids: read back the untried ones.
    new = PushMessage.objects.filter(
        target__in={row.target_id for row in rows},
        event_seq__in={row.event_seq for row in rows},
        state=PushState.PENDING,
        attempts=0,
    ).values_list("pk", flat=True)
    push_send_on_commit(list(new))


def notify_user(user_id: int, *, title: str, body: str) -> None:
    """A notice to every enabled target of the user (e.g. "your webhook endpoint was
    disabled"), whatever event types they want; sent once the caller's transaction commits."""
    now = timezone.now()
    created = [
        PushMessage.objects.create(
            target=target,
            event_type="notice",
            title=title[:250],
            body=body,
            next_attempt_at=now,
        ).pk
        for target in PushTarget.objects.filter(owner_id=user_id, enabled=True)
    ]
    push_send_on_commit(created)
