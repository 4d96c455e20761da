"""How the admin and the dashboard write times and durations for a person to read.

Helpers about one model are that model's properties; these are about plain values, shared
by every app's admin.
"""

from datetime import datetime

from django.utils import timezone
from django.utils.timesince import timesince


def age(moment: datetime | None) -> str:
    """'5 minutes ago', coarse enough to read at a glance; '—' for no time at all."""
    if moment is None:
        return "—"
    now = timezone.now()
    if (now - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment, now, depth=1)} ago"


def duration(seconds: float | None) -> str:
    """'3m 05s' or '42s'; '—' when unknown."""
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
