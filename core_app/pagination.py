"""limit/offset pagination that refuses bad values instead of ignoring them, and the two
shapes a paged list answers: the envelope `{"total", "limit", "offset", "<items>": [...]}`,
or (lists the original MobileSD answered as arrays) a bare array with the total in the
`X-Total-Count` header."""

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

TOTAL_COUNT_HEADER = "X-Total-Count"

# The response header of `paged_array_response`, for `extend_schema(parameters=...)`.
TOTAL_COUNT_PARAMETER = OpenApiParameter(
    TOTAL_COUNT_HEADER,
    int,
    OpenApiParameter.HEADER,
    response=[200],
    description="How many items match, on every page.",
)


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


def paginate(
    request: Request,
    queryset: QuerySet,
    *,
    count: Callable[[QuerySet], int] | None = None,
) -> tuple[list, int, int, int]:
    """One page of the queryset: (items, total, limit, offset). `total` counts every match,
    with `count(queryset)` if given (a cheaper exact count), else COUNT(*); the page and
    the total are read in one snapshot."""
    params = LimitOffsetSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    limit = params.validated_data.get("limit", settings.MOBILESD_DEFAULT_PAGE_SIZE)
    offset = params.validated_data["offset"]
    with one_snapshot():
        total = count(queryset) if count is not None else queryset.count()
        items = list(queryset[offset : offset + limit])
    return items, total, limit, offset


def paginated_response(
    request: Request,
    queryset: QuerySet,
    *,
    key: str,
    serialize: Callable[[list[Any]], Any],
    count: Callable[[QuerySet], int] | None = None,
) -> Response:
    """One page of `queryset` in the list envelope: its items, serialized by `serialize`,
    under `key`. `count` as `paginate`'s."""
    items, total, limit, offset = paginate(request, queryset, count=count)
    return Response({"total": total, "limit": limit, "offset": offset, key: serialize(items)})


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
