"""Health of MobileSD itself."""

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.health import (
    check_beat,
    check_broker,
    check_cache,
    check_database,
    check_storage,
    check_worker,
)
from core_app.serializers import HealthSerializer


class HealthView(APIView):
    """Whether the queue can make progress; no API key needed, so monitors can call it.

    503 when the database or the broker is down, no worker or no beat has been seen within
    two heartbeat periods, or the media storage is not writable or nearly full: each check says
    what it found. A cache that is down makes the status `degraded` but still answers 200:
    the API serves without it (rate limits fail open).
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        database = check_database()
        broker, cache = check_broker(), check_cache()
        worker, beat = check_worker(database=database), check_beat(database=database)
        storage = check_storage()
        serving = database.ok and broker.ok and worker.ok and beat.ok and storage.ok
        body = {
            "status": "ok" if serving and cache.ok else "degraded",
            "database": asdict(database),
            "broker": asdict(broker),
            "cache": asdict(cache),
            "worker": asdict(worker),
            "beat": asdict(beat),
            "storage": asdict(storage),
        }
        return Response(body, status=200 if serving else 503)
