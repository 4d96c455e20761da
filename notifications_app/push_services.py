"""Push notification targets (a user's Apprise URLs) and the sending of their outbox.

Invariants:
- A target's URL is checked (a kind of Apprise URL MobileSD can place, a destination the
  allowed networks take) when it is stored and again before every send; after it is
  stored only its privacy form is shown.
- A user sees and changes only their own targets (an admin, everyone's): another user's
  is a 404, as an unknown one.
- An outbox row is sent by whoever holds its lease (core_app.leases): a conditional update
  takes it, and only the holder records the result, so two workers never both send a row
  they both picked up, and a killed worker's row is taken again once its lease lapses.
- A failed send is tried again after each of MOBILESD_PUSH_RETRY_SECONDS; after the last,
  or at once for a destination now refused, the failure is recorded on the target.
"""

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from core_app.errors import Conflict, InvalidInput, MobileSDError, NotFound
from core_app.leases import lease_expiry
from integrations.push.client import PushError, push_send, push_service, push_url_problem
from notifications_app.models import PushMessage, PushState, PushTarget
from queue_app.images import InvalidImageError, thumbnail
from queue_app.models import JobImage

logger = logging.getLogger(__name__)

# The attached thumbnail: JPEG, which every service that takes images shows.
THUMBNAIL_SIZE = 512
TEST_EVENT = "test"


class NotificationFailed(MobileSDError):
    """A notification sent now (a test) did not get through."""

    status_code = 502
    default_code = "notification_failed"


# --- targets --------------------------------------------------------------------------


def push_target_list(*, owner: Any | None) -> QuerySet[PushTarget]:
    """The targets `owner` (None: an admin, everyone's) may see."""
    targets = PushTarget.objects.select_related("owner").order_by("owner_id", "name", "id")
    return targets if owner is None else targets.filter(owner=owner)


def push_target_get(*, target_id: int | str, owner: Any | None) -> PushTarget:
    """The target with this id, if `owner` (None: anyone) owns it; else a 404, as for an
    unknown id."""
    try:
        pk = int(str(target_id))
    except ValueError:
        pk = 0
    target = push_target_list(owner=owner).filter(pk=pk).first() if pk > 0 else None
    if target is None:
        raise NotFound(
            f"Notification target '{target_id}' not found.", code="notification_target_not_found"
        )
    return target


def _checked(url: str) -> str:
    """The privacy form of an Apprise URL MobileSD may send to; a 400 on `url` otherwise."""
    problem = push_url_problem(url)
    if problem:
        raise InvalidInput({"url": [problem]})
    return push_service(url).display


def push_target_create(
    *, owner: Any, name: str, url: str, events: list[str], enabled: bool = True
) -> PushTarget:
    """A new target for `owner` (its URL checked)."""
    display = _checked(url)
    return PushTarget.objects.create(
        owner=owner, name=name, url=url, url_display=display, events=events, enabled=enabled
    )


def push_target_update(
    *,
    target: PushTarget,
    name: str | None = None,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
) -> PushTarget:
    """Change what is given; a new URL is checked as at creation."""
    if url is not None:
        target.url_display = _checked(url)
        target.url = url
    if name is not None:
        target.name = name
    if events is not None:
        target.events = events
    if enabled is not None:
        target.enabled = enabled
    target.save()
    return target


def push_target_delete(*, target: PushTarget) -> None:
    """Delete the target and its outbox (a row being sent finds itself gone)."""
    target.delete()


def push_target_test(*, target: PushTarget) -> PushMessage:
    """Send a test notification to the target now (once, even if it is disabled): the sent
    row, or NotificationFailed with the service's error."""
    message = PushMessage.objects.create(
        target=target,
        event_type=TEST_EVENT,
        title="MobileSD test notification",
        body=f"Notifications from MobileSD reach \u201c{target.name}\u201d.",
        next_attempt_at=timezone.now(),
    )
    push_message_send(message_id=message.pk, retry=False)
    message.refresh_from_db()
    target.refresh_from_db()
    if message.state != PushState.SENT:
        raise NotificationFailed(f"The test notification was not sent: {message.last_error}")
    return message


# --- the outbox -----------------------------------------------------------------------


def _take(message_id: int) -> uuid.UUID | None:
    """Take the row's lease if it is due and nobody holds it: our token, or None."""
    now = timezone.now()
    token = uuid.uuid4()
    taken = (
        PushMessage.objects.filter(pk=message_id)
        .filter(
            Q(state=PushState.PENDING, next_attempt_at__lte=now)
            | Q(state=PushState.SENDING, lease_expires_at__lte=now)
        )
        .update(
            state=PushState.SENDING,
            lease_token=token,
            lease_expires_at=lease_expiry(settings.MOBILESD_PUSH_LEASE_SECONDS, now=now),
            attempts=F("attempts") + 1,
        )
    )
    return token if taken else None


def _attachment(job_id: uuid.UUID | None) -> tuple[bytes, str, str] | None:
    """The job's first image as a JPEG thumbnail (bytes, file name, type), or None."""
    if job_id is None:
        return None
    image = JobImage.objects.filter(job_id=job_id).order_by("index").first()
    if image is None:
        return None
    try:
        data, content_type = thumbnail(image=image, size=THUMBNAIL_SIZE, fmt="jpeg")
    except (FileNotFoundError, InvalidImageError) as exc:
        logger.warning("No thumbnail for the notification of job %s: %s", job_id, exc)
        return None
    if isinstance(data, File):
        with data:
            data = data.read()
    return bytes(data), f"{job_id.hex[:8]}.jpg", content_type


def _attempt(message: PushMessage) -> tuple[str, bool]:
    """Send the row: ("", _) when sent, else (the error, whether it is worth a retry)."""
    target = message.target
    if not target.enabled and message.event_type != TEST_EVENT:
        return "The target is disabled.", False
    problem = push_url_problem(target.url)
    if problem:
        return f"Destination refused: {problem}", False
    try:
        push_send(
            target.url,
            title=message.title,
            body=message.body,
            attachment=_attachment(message.job_id),
            timeout=settings.MOBILESD_PUSH_TIMEOUT_SECONDS,
        )
    except PushError as exc:
        return str(exc), True
    return "", False


def push_message_send(*, message_id: int, retry: bool = True) -> float | None:
    """Send the outbox row if it is due and nobody holds it, and record the result: the
    seconds until its next try when it failed and will be tried again, else None."""
    token = _take(message_id)
    if token is None:
        return None
    message = PushMessage.objects.select_related("target").filter(pk=message_id).first()
    if message is None:  # deleted with its target just now
        return None
    error, transient = _attempt(message)
    now = timezone.now()
    ours = PushMessage.objects.filter(pk=message_id, lease_token=token)
    delays = settings.MOBILESD_PUSH_RETRY_SECONDS
    with transaction.atomic():
        if not error:
            if ours.update(
                state=PushState.SENT, sent_at=now, lease_token=None, lease_expires_at=None
            ):
                PushTarget.objects.filter(pk=message.target_id).update(
                    last_sent_at=now, last_error="", last_error_at=None
                )
            logger.info("Push notification %s sent to target %s", message_id, message.target_id)
            return None
        if retry and transient and message.attempts <= len(delays):
            delay = float(delays[message.attempts - 1])
            ours.update(
                state=PushState.PENDING,
                next_attempt_at=now + timedelta(seconds=delay),
                lease_token=None,
                lease_expires_at=None,
                last_error=error,
            )
            logger.warning(
                "Push notification %s to target %s failed (try %d), again in %.0f s: %s",
                *(message_id, message.target_id, message.attempts, delay, error),
            )
            return delay
        if ours.update(
            state=PushState.FAILED, lease_token=None, lease_expires_at=None, last_error=error
        ):
            PushTarget.objects.filter(pk=message.target_id).update(
                last_error=error, last_error_at=now
            )
        logger.warning(
            "Push notification %s to target %s failed for good after %d tr%s: %s",
            *(message_id, message.target_id, message.attempts),
            "y" if message.attempts == 1 else "ies",
            error,
        )
        return None


def push_message_retry(*, message_id: int) -> PushMessage:
    """Make a failed row due again, with a fresh set of tries (the caller queues it, or the
    recovery task finds it); another row is a 409 `notification_not_failed`."""
    with transaction.atomic():
        message = PushMessage.objects.select_for_update().filter(pk=message_id).first()
        if message is None:
            raise NotFound(f"Notification {message_id} not found.")
        if message.state != PushState.FAILED:
            raise Conflict(
                f"Notification {message_id} is {message.state}: only a failed one can be sent "
                "again.",
                code="notification_not_failed",
            )
        message.state = PushState.PENDING
        message.attempts = 0
        message.next_attempt_at = timezone.now()
        message.save(update_fields=["state", "attempts", "next_attempt_at"])
    return message


def push_messages_due(*, limit: int = 500) -> list[int]:
    """The rows to send now: pending ones whose time has come, and those whose sender's
    lease lapsed (a killed worker), oldest first."""
    now = timezone.now()
    due = PushMessage.objects.filter(
        Q(state=PushState.PENDING, next_attempt_at__lte=now)
        | Q(state=PushState.SENDING, lease_expires_at__lte=now)
    )
    return list(due.order_by("id").values_list("pk", flat=True)[:limit])


def push_messages_prune(*, older_than: timedelta) -> int:
    """Delete the sent and failed rows created longer ago than `older_than` (the outbox's
    history, shown in the admin); the number deleted."""
    cutoff = timezone.now() - older_than
    deleted, _ = PushMessage.objects.filter(
        state__in=(PushState.SENT, PushState.FAILED), created_at__lt=cutoff
    ).delete()
    return deleted
