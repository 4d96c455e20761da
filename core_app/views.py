"""Health of MobileSD itself."""

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.health import check_broker, check_cache, check_database
from core_app.serializers import HealthSerializer


class HealthView(APIView):
    """Database, broker and cache reachability; no API key needed, so monitors can call it.

    503 when the database or the broker is down. A cache that is down makes the status
    `degraded` but still answers 200: the API serves without it (rate limits fail open).
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        database, broker, cache = check_database(), check_broker(), check_cache()
        serving = database.ok and broker.ok
        body = {
            "status": "ok" if serving and cache.ok else "degraded",
            "database": asdict(database),
            "broker": asdict(broker),
            "cache": asdict(cache),
        }
        return Response(body, status=200 if serving else 503)
