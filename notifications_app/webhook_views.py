"""The webhook API: endpoints (a client key's own; an admin's every one), their deliveries,
a delivery sent again, a test event, and the signing secret of callback URLs."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.pagination import paginated_response
from core_app.scopes import owner_scope, request_is_admin, request_user
from core_app.serializers import ErrorSerializer, MessageSerializer
from notifications_app.webhook_serializers import (
    WebhookDeliveryListSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointListSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookSigningSecretSerializer,
)
from notifications_app.webhook_services import (
    webhook_deliveries,
    webhook_delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_get,
    webhook_endpoint_list,
    webhook_endpoint_test,
    webhook_endpoint_update,
    webhook_signing_secret_rotate,
)

PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
    OpenApiParameter("offset", int),
]


class WebhookListView(APIView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: WebhookEndpointListSerializer},
        summary="List webhook endpoints (a client key's own; every user's for an admin)",
        operation_id="webhooks_list",
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            request,
            webhook_endpoint_list(owner=owner_scope(request)),
            key="webhooks",
            serialize=lambda endpoints: WebhookEndpointSerializer(endpoints, many=True).data,
        )

    @extend_schema(
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
        summary="Add a webhook endpoint (its signing secret is in this answer only)",
        description="The url must be at an address MOBILESD_WEBHOOK_ALLOWED_NETWORKS allows "
        "(a 400 naming the setting otherwise).",
        operation_id="webhooks_create",
    )
    def post(self, request: Request) -> Response:
        serializer = WebhookEndpointCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint = webhook_endpoint_create(
            owner=request_user(request),
            is_admin=request_is_admin(request),
            url=data["url"],
            event_types=data["events"],
            description=data["description"],
            all_users=data["all_users"],
        )
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )


class WebhookDetailView(APIView):
    @extend_schema(
        responses={200: WebhookEndpointSerializer},
        summary="A webhook endpoint",
        operation_id="webhooks_retrieve",
    )
    def get(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        request=WebhookEndpointUpdateSerializer,
        responses={200: WebhookEndpointSerializer},
        summary="Change a webhook endpoint (url, events, description, enabled)",
        operation_id="webhooks_partial_update",
    )
    def patch(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        serializer = WebhookEndpointUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(
            endpoint=endpoint,
            is_admin=request_is_admin(request),
            changes=dict(serializer.validated_data),
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        responses={200: MessageSerializer},
        summary="Delete a webhook endpoint and its deliveries",
        operation_id="webhooks_destroy",
    )
    def delete(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        deleted = webhook_endpoint_delete(endpoint=endpoint)
        return Response({"message": f"Webhook {deleted} deleted."})


class WebhookDeliveryListView(APIView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        responses={200: WebhookDeliveryListSerializer},
        summary="An endpoint's deliveries, newest first, with every try",
        operation_id="webhooks_deliveries_list",
    )
    def get(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        return paginated_response(
            request,
            webhook_deliveries(endpoint=endpoint),
            key="deliveries",
            serialize=lambda deliveries: WebhookDeliverySerializer(deliveries, many=True).data,
        )


class WebhookRedeliverView(APIView):
    @extend_schema(
        request=None,
        responses={202: WebhookDeliverySerializer, 409: ErrorSerializer},
        summary="Deliver again (the same webhook-id; a fresh retry schedule)",
        operation_id="webhooks_delivery_redeliver",
    )
    def post(self, request: Request, webhook_id: int, delivery_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        delivery = webhook_delivery_redeliver(endpoint=endpoint, delivery_id=delivery_id)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookTestView(APIView):
    @extend_schema(
        request=None,
        responses={202: WebhookDeliverySerializer},
        summary="Send a webhook.test event to the endpoint",
        operation_id="webhooks_test",
    )
    def post(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhook_endpoint_get(endpoint_id=webhook_id, owner=owner_scope(request))
        delivery = webhook_endpoint_test(endpoint=endpoint)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookSigningSecretView(APIView):
    @extend_schema(
        request=None,
        responses={201: WebhookSigningSecretSerializer},
        summary="Make (or rotate) the secret that signs your jobs' callback_url deliveries",
        description="Shown this once. A callback_url that is also one of your endpoints' "
        "URLs is signed with that endpoint's secret instead.",
        operation_id="webhooks_signing_secret_rotate",
    )
    def post(self, request: Request) -> Response:
        signing = webhook_signing_secret_rotate(owner=request_user(request))
        return Response(
            WebhookSigningSecretSerializer(signing).data, status=status.HTTP_201_CREATED
        )
