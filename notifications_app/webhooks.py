"""What a webhook is made of: secrets, message ids, who receives which event, and the
payload (the Standard Webhooks shape, `{"type", "timestamp", "data"}`).

The payload of a job's event is the job as `GET /api/v1/queue/jobs/<id>/status` answers
it, read when the delivery is made (so a receiver sees the images of `job.completed`, by
the signed links of its `image_links`); any other event's is the event as the event stream sends it
(events_app.messages)."""

import base64
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Max

from events_app.messages import event_message
from events_app.models import Event
from queue_app.models import Job
from queue_app.serializers import JobSerializer

SECRET_PREFIX = "whsec_"
MESSAGE_PREFIX = "msg_"
# A job's events its callback_url receives: its ends.
CALLBACK_EVENT_TYPES = frozenset({"job.completed", "job.failed", "job.cancelled"})
# The event of POST /api/v1/webhooks/<id>/test (never in the event log).
TEST_EVENT_TYPE = "webhook.test"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: `whsec_` + base64 of 32 random
    bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    """A `webhook-id`: unique per delivery, the same on each of its tries."""
    return MESSAGE_PREFIX + secrets.token_urlsafe(18)


def last_event_id() -> int:
    """The id of the last event written so far (0: none): a new endpoint's starting point."""
    return Event.objects.aggregate(last=Max("id"))["last"] or 0


def type_matches(event_type: str, wanted: Iterable[str]) -> bool:
    """Whether `event_type` is among `wanted`: exact types, or prefixes ending in "."."""
    return any(
        event_type.startswith(kind) if kind.endswith(".") else event_type == kind for kind in wanted
    )


def visible_to(event: Event, *, owner_id: int, all_users: bool) -> bool:
    """Whether an endpoint of `owner_id` may receive `event`: as events_visible says for a
    client's key (its user's events and everyone's: servers, the queue); all of them for
    an admin's endpoint that asked for every user's."""
    return all_users or event.owner_id is None or event.owner_id == owner_id


def _timestamp(value: datetime | None) -> str | None:
    from core_app.fields import format_timestamp

    return format_timestamp(value) if value is not None else None


def job_data(job: Job) -> dict[str, Any]:
    """A job's payload data: its status answer, whose `image_links` (a completed job's) are
    signed, so that a receiver opens the images without an API key (queue_app.links)."""
    return dict(JobSerializer(job, context={"queue_place": True}).data)


def payload(event: Event, *, job: Job | None) -> dict[str, Any]:
    """The body of `event`'s deliveries (`job`: its job, when it still exists)."""
    if event.type.startswith("job.") and job is not None:
        data = job_data(job)
    else:
        data = event_message(event)
    return {"type": event.type, "timestamp": _timestamp(event.created_at), "data": data}
