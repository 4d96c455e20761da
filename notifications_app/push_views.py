"""Push notification targets API: register notification services (phones, chats, mail) as
Apprise URLs, list, show, change and delete them, and send a test notification."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.pagination import paginated_response
from core_app.scopes import owner_scope, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer
from notifications_app.push_serializers import (
    PushTargetListSerializer,
    PushTargetRequestSerializer,
    PushTargetSerializer,
    PushTargetUpdateSerializer,
    PushTestSerializer,
)
from notifications_app.push_services import (
    push_target_create,
    push_target_delete,
    push_target_get,
    push_target_list,
    push_target_test,
    push_target_update,
)

NOT_FOUND = {404: ErrorSerializer}
REFUSED_URL = (
    "The URL is checked: a kind of Apprise URL whose destination MobileSD can tell, and a "
    "destination MOBILESD_WEBHOOK_ALLOWED_NETWORKS allows (400 `validation_error` on `url` "
    "naming the setting otherwise)."
)


class PushTargetListView(APIView):
    @extend_schema(
        request=PushTargetRequestSerializer,
        responses={201: PushTargetSerializer, 400: ErrorSerializer},
        summary="Register a notification target (an Apprise URL)",
        description=f"Notified when the user's jobs complete or fail and batches finish. "
        f"{REFUSED_URL}",
        operation_id="notification_targets_create",
    )
    def post(self, request: Request) -> Response:
        serializer = PushTargetRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = push_target_create(owner=request_user(request), **serializer.validated_data)
        return Response(PushTargetSerializer(target).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
            OpenApiParameter("offset", int),
        ],
        responses={200: PushTargetListSerializer},
        summary="List notification targets (a client key's own; every user's for an admin)",
        operation_id="notification_targets_list",
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            request,
            push_target_list(owner=owner_scope(request)),
            key="notification_targets",
            serialize=lambda items: PushTargetSerializer(items, many=True).data,
        )


class PushTargetDetailView(APIView):
    @extend_schema(
        responses={200: PushTargetSerializer, **NOT_FOUND},
        summary="A notification target",
        operation_id="notification_targets_retrieve",
    )
    def get(self, request: Request, target_id: str) -> Response:
        target = push_target_get(target_id=target_id, owner=owner_scope(request))
        return Response(PushTargetSerializer(target).data)

    @extend_schema(
        request=PushTargetUpdateSerializer,
        responses={200: PushTargetSerializer, 400: ErrorSerializer, **NOT_FOUND},
        summary="Change a notification target (name, url, events, enabled)",
        description=REFUSED_URL,
        operation_id="notification_targets_partial_update",
    )
    def patch(self, request: Request, target_id: str) -> Response:
        target = push_target_get(target_id=target_id, owner=owner_scope(request))
        serializer = PushTargetUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        target = push_target_update(target=target, **serializer.validated_data)
        return Response(PushTargetSerializer(target).data)

    @extend_schema(
        responses={200: MessageSerializer, **NOT_FOUND},
        summary="Delete a notification target",
        operation_id="notification_targets_destroy",
    )
    def delete(self, request: Request, target_id: str) -> Response:
        target = push_target_get(target_id=target_id, owner=owner_scope(request))
        push_target_delete(target=target)
        return Response({"message": f"Notification target {target_id} deleted."})


class PushTargetTestView(APIView):
    @extend_schema(
        request=None,
        responses={200: PushTestSerializer, 502: ErrorSerializer, **NOT_FOUND},
        summary="Send a test notification to a target now",
        description="Sent at once (also to a disabled target), not queued: 200 "
        '`{"sent": true}` when the service took it, else 502 `notification_failed` with the '
        "service's error (also kept as the target's last_error).",
        operation_id="notification_targets_test",
    )
    def post(self, request: Request, target_id: str) -> Response:
        target = push_target_get(target_id=target_id, owner=owner_scope(request))
        push_target_test(target=target)
        return Response({"sent": True, "message": f"A test notification was sent to {target}."})
