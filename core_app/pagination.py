"""limit/offset pagination that refuses bad values instead of ignoring them, and the two
shapes a paged list answers: the envelope `{"total", "limit", "offset", "<items>": [...]}`,
or (lists the original MobileSD answered as arrays) a bare array with the total in the
`X-Total-Count` header.

The lists of jobs, batches and downloads are also a changes-since feed: their envelope
carries `next_cursor`, and `?updated_since=<cursor>` answers the rows changed after it
(core_app.changes, README "Changes since")."""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core_app.changes import Subject, change_feed
from core_app.errors import InvalidInput, MobileSDError
from core_app.scopes import owner_scope
from core_app.serializers import ErrorSerializer

TOTAL_COUNT_HEADER = "X-Total-Count"

# The response header of `paged_array_response`, for `extend_schema(parameters=...)`.
TOTAL_COUNT_PARAMETER = OpenApiParameter(
    TOTAL_COUNT_HEADER,
    int,
    OpenApiParameter.HEADER,
    response=[200],
    description="How many items match, on every page.",
)

UPDATED_SINCE = "updated_since"

# The query parameter of the lists that are a changes-since feed.
UPDATED_SINCE_PARAMETER = OpenApiParameter(
    UPDATED_SINCE,
    int,
    description="A changes-since feed: only the rows changed after this cursor (a "
    "`next_cursor` of an earlier answer), their state now, with `deleted` (ids deleted "
    "since), `next_cursor` (ask from it next) and `has_more` (ask again at once). 0: every "
    "row, paged by `limit` and `offset`. Only `limit` (and `offset`, with 0) go with it. A "
    "cursor older than the events kept answers 410 `cursor_expired`: start again from 0.",
)

# The statuses a feed answers beside 200 (400 is every operation's).
FEED_RESPONSES: dict[int, Any] = {410: ErrorSerializer}

# Query parameters that go with updated_since; the lists' filters do not: the feed is of
# every row the key may see.
FEED_PARAMETERS = frozenset({UPDATED_SINCE, "limit", "offset"})
# A cursor is a bigint: 19 digits at most.
_CURSOR = re.compile(r"[0-9]{1,19}")
MAX_CURSOR = 2**63 - 1

# The database's OFFSET is a 64-bit integer; a larger one would be a 500, not a 400.
MAX_OFFSET = 2**63 - 1 - 10**6


class LimitOffsetSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, required=False, default=0)

    def validate_limit(self, value: int) -> int:
        maximum = settings.MOBILESD_MAX_PAGE_SIZE
        if value > maximum:
            raise serializers.ValidationError(f"Ensure this value is at most {maximum}.")
        return value


@contextmanager
def one_snapshot() -> Iterator[None]:
    """The reads inside see one committed state of the database (a REPEATABLE READ, READ
    ONLY transaction on PostgreSQL), so that a page and its total agree. Inside a
    transaction already (a test's), or on SQLite (whose transactions here take the write
    lock), the reads are left as they are: each statement still sees one committed state."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def page_params(request: Request) -> tuple[int, int]:
    """The (limit, offset) a request asks for, refused when out of bounds."""
    params = LimitOffsetSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    limit = params.validated_data.get("limit", settings.MOBILESD_DEFAULT_PAGE_SIZE)
    return limit, params.validated_data["offset"]


def paginate(
    request: Request,
    queryset: QuerySet,
    *,
    count: Callable[[QuerySet], int] | None = None,
) -> tuple[list, int, int, int]:
    """One page of the queryset: (items, total, limit, offset). `total` counts every match,
    with `count(queryset)` if given (a cheaper exact count), else COUNT(*); the page and
    the total are read in one snapshot."""
    items, total, limit, offset, _ = _page(request, queryset, count=count, cursor=False)
    return items, total, limit, offset


def _page(
    request: Request,
    queryset: QuerySet,
    *,
    count: Callable[[QuerySet], int] | None,
    cursor: bool,
) -> tuple[list, int, int, int, int | None]:
    """`paginate`'s page, and with `cursor` the feed's head, read in the page's snapshot
    and first: on SQLite, whose statements each see their own state, a change between the
    head and the rows is then read again from the head, never lost."""
    limit, offset = page_params(request)
    head = None
    if cursor:
        change_feed().catch_up()
    with one_snapshot():
        if cursor:
            head = change_feed().head()
        total = count(queryset) if count is not None else queryset.count()
        items = list(queryset[offset : offset + limit])
    return items, total, limit, offset, head


def updated_since(request: Request) -> int | None:
    """The cursor of `?updated_since=` (None: not asked), refused when malformed or beside
    a parameter the feed does not take."""
    values = request.query_params.getlist(UPDATED_SINCE)
    if not values:
        return None
    if len(values) > 1 or not _CURSOR.fullmatch(values[0]) or int(values[0]) > MAX_CURSOR:
        raise MobileSDError(
            "updated_since must be 0 or a next_cursor MobileSD answered.", code="invalid_cursor"
        )
    cursor = int(values[0])
    others = sorted(set(request.query_params) - FEED_PARAMETERS)
    if cursor > 0 and "offset" in request.query_params:
        others.insert(0, "offset")
    if others:
        raise InvalidInput(
            {
                name: [
                    "Not with updated_since: the feed pages by its cursor, over every row "
                    "the key may see."
                ]
                for name in others
            }
        )
    return cursor


def paginated_response(
    request: Request,
    queryset: QuerySet,
    *,
    key: str,
    serialize: Callable[[list[Any]], Any],
    count: Callable[[QuerySet], int] | None = None,
    feed: Subject | None = None,
) -> Response:
    """One page of `queryset` in the list envelope: its items, serialized by `serialize`,
    under `key`. `count` as `paginate`'s.

    A list that is the feed of `feed`'s changes also answers `next_cursor` (the head read
    in the page's snapshot: a client that asks from it misses nothing committed after what
    it saw) and `?updated_since=`: 0, the page with `deleted: []` and `has_more`; a later
    cursor, the rows changed after it (core_app.changes)."""
    cursor = updated_since(request) if feed is not None else None
    if feed is not None and cursor:
        limit, _ = page_params(request)
        owner = owner_scope(request)
        changes = change_feed().changes(
            subject=feed,
            rows=queryset,
            after=cursor,
            owner_id=None if owner is None else owner.pk,
            limit=limit,
        )
        return Response(
            {
                "total": len(changes.rows),
                "limit": limit,
                "offset": 0,
                key: serialize(changes.rows),
                "next_cursor": changes.next_cursor,
                "deleted": changes.deleted,
                "has_more": changes.has_more,
            }
        )
    items, total, limit, offset, head = _page(
        request, queryset, count=count, cursor=feed is not None
    )
    body = {"total": total, "limit": limit, "offset": offset, key: serialize(items)}
    if head is not None:
        body["next_cursor"] = head
    if cursor == 0:
        body["deleted"] = []
        body["has_more"] = offset + len(items) < total
    return Response(body)


def paged_array_response(
    request: Request,
    queryset: QuerySet,
    *,
    serialize: Callable[[list[Any]], list[Any]],
) -> Response:
    """One page of `queryset` as a JSON array, serialized by `serialize`; the count of every
    match in the `X-Total-Count` header. Paging parameters as `paginated_response`."""
    items, total, _, _ = paginate(request, queryset)
    return Response(serialize(items), headers={TOTAL_COUNT_HEADER: str(total)})
