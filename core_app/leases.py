"""The lease vocabulary shared by the two kinds of work a worker holds: jobs and downloads.

A worker that takes a row (a job to generate, a file to download) writes a fresh
`lease_token` and a `lease_expires_at`, renews the expiry while it works, and changes the
row only while the token is still its own. When an update finds the row no longer ours,
`LeaseLost` says why. A transient failure waits out `backoff_seconds` before the row is
taken again.
"""

from datetime import datetime, timedelta
from enum import StrEnum

from django.utils import timezone

__all__ = ["LeaseLost", "backoff_seconds", "lease_expiry", "lease_lost_reason"]


class LeaseLost(StrEnum):
    """Why a row a worker held is no longer its own."""

    CANCELLED = "cancelled"  # someone cancelled it: stop, record nothing more
    GONE = "gone"  # the row was deleted
    LOST = "lost"  # the lease lapsed and another worker (or the reconcile) took it over


def lease_lost_reason(*, exists: bool, cancelled: bool) -> LeaseLost:
    """The reason to report for a row our conditional update no longer matched."""
    if not exists:
        return LeaseLost.GONE
    return LeaseLost.CANCELLED if cancelled else LeaseLost.LOST


def lease_expiry(seconds: float, *, now: datetime | None = None) -> datetime:
    """When a lease taken (or renewed) now for `seconds` lapses."""
    return (now or timezone.now()) + timedelta(seconds=seconds)


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Exponential backoff before retry number `attempt` (1, 2, ...): `base`, 2x, 4x, ...,
    never more than `cap`, and never less than a `retry_after` the other side asked for."""
    delay = base * 2 ** max(attempt - 1, 0)
    return float(min(cap, max(delay, retry_after or 0.0)))
