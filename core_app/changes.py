"""The changes-since feed of the lists of jobs, batches and downloads (`?updated_since=`).

The lists are queue_app's and civitai_app's; the event log that says what changed lives
above them (events_app). So the log installs its reader here when Django starts
(`change_feed_install`, from events_app.apps), and the lists reach it through
`core_app.pagination.paginated_response` without importing a higher layer (DESIGN.md,
"Layers").
"""

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet

# What a list lists: the subject of the events that change its rows.
Subject = Literal["job", "batch", "download"]


@dataclass(frozen=True)
class Changes:
    """One answer of the feed: the rows changed after the cursor (their state now, in the
    order of their first change), the ids of those deleted, the cursor to ask from next,
    and whether more changes are waiting after it."""

    rows: list[Any]
    deleted: list[str]
    next_cursor: int
    has_more: bool


class ChangeFeed(Protocol):
    def catch_up(self) -> None:
        """Make the changes committed so far readable, so that a head read next covers
        them (a reader that skips it only reads some of them again, later). Call it
        outside a transaction."""
        ...

    def head(self) -> int:
        """The cursor a reader that has seen what the current reads see starts from next.
        Read it in the list's snapshot, before the rows."""
        ...

    def changes(
        self, *, subject: Subject, rows: QuerySet, after: int, owner_id: int | None, limit: int
    ) -> Changes:
        """The rows of `rows` (the list's queryset, scoped to the key) whose subject changed
        after cursor `after`, at most `limit` of them, as events visible to a key of user
        `owner_id` (None: an admin key) say. Raises `MobileSDError` (invalid_cursor,
        cursor_expired) for a cursor it cannot answer from. Call it outside a
        transaction."""
        ...


_feed: ChangeFeed | None = None


def change_feed_install(feed: ChangeFeed) -> None:
    global _feed
    _feed = feed


def change_feed() -> ChangeFeed:
    if _feed is None:
        raise ImproperlyConfigured("No change feed is installed (events_app provides it).")
    return _feed
