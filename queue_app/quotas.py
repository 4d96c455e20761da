"""Quotas per user, checked when a job is queued: the most jobs a user may have pending,
and the most images one job may ask for.

The limits are the settings' defaults (MOBILESD_MAX_PENDING_PER_USER,
MOBILESD_MAX_IMAGES_PER_JOB) unless the user's `core_app.UserQuota` row says otherwise; 0 is
unlimited. Admin keys are not exempt: an operator who wants no limit for a user sets 0.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from core_app.errors import InvalidInput, MobileSDError
from core_app.models import UserQuota
from queue_app.models import Job, JobStatus

__all__ = ["QueueLimitReached", "UserLimits", "batch_quota_check", "quota_check", "user_limits"]


class QueueLimitReached(MobileSDError):
    """The user already has as many pending jobs as their quota allows (a 429)."""

    status_code = 429
    default_code = "queue_limit"


@dataclass(frozen=True)
class UserLimits:
    """A user's effective limits; 0 = unlimited."""

    max_pending_jobs: int
    max_images_per_job: int


def user_limits(*, user: Any) -> UserLimits:
    """The limits that apply to `user`: their UserQuota's where set, else the defaults."""
    quota = UserQuota.objects.filter(user=user).first()

    def pick(value: int | None, default: int) -> int:
        return max(int(default if value is None else value), 0)

    return UserLimits(
        max_pending_jobs=pick(
            quota.max_pending_jobs if quota else None, settings.MOBILESD_MAX_PENDING_PER_USER
        ),
        max_images_per_job=pick(
            quota.max_images_per_job if quota else None, settings.MOBILESD_MAX_IMAGES_PER_JOB
        ),
    )


def images_requested(params: dict[str, Any]) -> int:
    """How many images a job asks for: batch_size x n_iter (MobileSD sends num_images as
    n_iter with a batch of 1; see queue_app.params)."""
    try:
        return max(int(params.get("num_images") or 1), 1)
    except (TypeError, ValueError):
        return 1


def quota_check(*, owner: Any, generation_params: dict[str, Any]) -> None:
    """Refuse a job `owner` may not queue now: too many images (400, naming the limit) or
    the pending-jobs quota reached (429 `queue_limit`, saying the limit).

    Call inside the submit's transaction: the user's row is locked, so two submits of one
    user at quota - 1 are counted one after the other and exactly one of them is queued.
    The count stops at the limit, reading at most that many rows of the owner's pending
    jobs (an index of pending jobs by owner).
    """
    limits = user_limits(user=owner)
    _check_images(limits, generation_params, "generation_params.num_images")
    _check_pending(owner, limits, adding=1)


def batch_quota_check(*, owner: Any, jobs: list[dict[str, Any]]) -> None:
    """quota_check for a batch of `jobs` (their generation_params) queued at once: each
    within the images per job, and all of them within the pending-jobs quota (a batch that
    would pass it is refused whole, saying how many it may still queue)."""
    limits = user_limits(user=owner)
    for index, params in enumerate(jobs):
        _check_images(limits, params, f"jobs.{index}.num_images")
    _check_pending(owner, limits, adding=len(jobs))


def _check_images(limits: UserLimits, params: dict[str, Any], field: str) -> None:
    images = images_requested(params)
    if limits.max_images_per_job and images > limits.max_images_per_job:
        raise InvalidInput(
            {
                field: [
                    f"At most {limits.max_images_per_job} images per job are allowed for "
                    f"this user ({images} requested)."
                ]
            }
        )


def _check_pending(owner: Any, limits: UserLimits, *, adding: int) -> None:
    limit = limits.max_pending_jobs
    if not limit:
        return
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    pending = Job.objects.filter(owner=owner, status=JobStatus.PENDING).order_by()[:limit]
    waiting = pending.count()
    if waiting + adding > limit:
        room = max(limit - waiting, 0)
        more = "" if adding == 1 else f" ({adding} asked for, room for {room})"
        raise QueueLimitReached(
            f"Queue limit reached: at most {limit} pending jobs per user{more}. Wait for "
            "some to start, or cancel some."
        )
