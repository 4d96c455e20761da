"""Health of MobileSD itself."""

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.health import check_broker, check_database
from core_app.serializers import HealthSerializer


class HealthView(APIView):
    """Database and broker reachability; no API key needed, so monitors can call it."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, auth=[])
    def get(self, request: Request) -> Response:
        database, broker = check_database(), check_broker()
        healthy = database.ok and broker.ok
        body = {
            "status": "ok" if healthy else "degraded",
            "database": asdict(database),
            "broker": asdict(broker),
        }
        return Response(body, status=200 if healthy else 503)
