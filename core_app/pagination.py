"""limit/offset pagination that refuses bad values instead of ignoring them, and the one
envelope every paged list answers: `{"total", "limit", "offset", "<items>": [...]}`."""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response


class LimitOffsetSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, required=False)
    offset = serializers.IntegerField(min_value=0, required=False, default=0)

    def validate_limit(self, value: int) -> int:
        maximum = settings.MOBILESD_MAX_PAGE_SIZE
        if value > maximum:
            raise serializers.ValidationError(f"Ensure this value is at most {maximum}.")
        return value


def paginate(request: Request, queryset: QuerySet) -> tuple[list, int, int, int]:
    """One page of the queryset: (items, total, limit, offset). `total` counts every match."""
    params = LimitOffsetSerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    limit = params.validated_data.get("limit", settings.MOBILESD_DEFAULT_PAGE_SIZE)
    offset = params.validated_data["offset"]
    total = queryset.count()
    return list(queryset[offset : offset + limit]), total, limit, offset


def paginated_response(
    request: Request,
    queryset: QuerySet,
    *,
    key: str,
    serialize: Callable[[list[Any]], Any],
) -> Response:
    """One page of `queryset` in the list envelope: its items, serialized by `serialize`,
    under `key`."""
    items, total, limit, offset = paginate(request, queryset)
    return Response({"total": total, "limit": limit, "offset": offset, key: serialize(items)})
