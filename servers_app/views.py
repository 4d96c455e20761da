"""Server configuration API: /api/v1/servers[/<alias>]."""

from dataclasses import asdict
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.errors import ServerUnreachable
from core_app.pagination import TOTAL_COUNT_PARAMETER, paged_array_response
from core_app.permissions import ADMIN_ONLY, ADMIN_WRITES
from core_app.serializers import ErrorSerializer, MessageSerializer
from servers_app.credentials import PASSWORD_DROPPED
from servers_app.filters import ModelListQuerySerializer
from servers_app.models import ModelKind, Server
from servers_app.selectors import (
    model_group_rows,
    model_groups,
    server_get,
    server_lists,
    server_require,
)
from servers_app.serializers import (
    CheckpointSerializer,
    LoraSerializer,
    RefreshResultSerializer,
    ServerEnvelopeSerializer,
    ServerListsSerializer,
    ServerSerializer,
    model_group_data,
)
from servers_app.services import (
    server_create,
    server_delete,
    server_pause,
    server_refresh_models,
    server_resume,
    server_update,
)

# Statuses a view answers beyond those core_app.schema.AutoSchema adds to every operation
# that can give them (400 on input, 401, 403 on session writes, 404 on paths naming an
# object, 413/415 on bodies, 429, 500): a 404 for a server named in the query.
NOT_FOUND = {404: ErrorSerializer}


class ServerViewSet(viewsets.ModelViewSet):
    """Generation servers, addressed by alias. The list is a plain array, as it always was.
    Every key reads them; only the admin scope adds, changes or deletes one."""

    permission_classes = ADMIN_WRITES
    queryset = Server.objects.all()
    serializer_class = ServerSerializer
    lookup_field = "alias"
    lookup_value_regex = "[^/]+"
    pagination_class = None
    filter_backends: list = []

    def get_object(self) -> Server:
        return server_get(alias=self.kwargs["alias"])

    @extend_schema(responses={201: ServerEnvelopeSerializer})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = server_create(data=serializer.validated_data)
        body = {"message": "Server configuration added successfully.", "server": server}
        return Response(ServerEnvelopeSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: ServerEnvelopeSerializer})
    def partial_update(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().partial_update(request, *args, **kwargs)

    @extend_schema(responses={200: ServerEnvelopeSerializer})
    def update(self, request: Request, *args: object, **kwargs: object) -> Response:
        partial = bool(kwargs.pop("partial", False))
        server = self.get_object()
        serializer = self.get_serializer(server, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        updated = server_update(server=server, data=data, partial=partial)
        message = "Server configuration updated successfully."
        if updated.password_dropped:
            message += f" {PASSWORD_DROPPED}"
        body = {"message": message, "server": updated.server}
        return Response(ServerEnvelopeSerializer(body).data)

    @extend_schema(responses={200: MessageSerializer, 409: ErrorSerializer})
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        server_delete(server=self.get_object())
        return Response({"message": "Server configuration deleted successfully."})


def _list_models(request: Request, *, kind: str) -> Response:
    """One page of the grouped models of `kind` as an array (the original's shape); the
    total in `X-Total-Count`."""
    query = ModelListQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    alias = query.validated_data.get("server_alias", "")
    if alias:
        server_require(alias=alias)
    rows, identities = model_groups(
        kind=kind, server_alias=alias, search=query.validated_data.get("search", "")
    )

    def serialize(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        grouped = model_group_rows(rows, [entry["identity"] for entry in page])
        return [model_group_data(group) for group in grouped.values() if group]

    return paged_array_response(request, identities, serialize=serialize)


MODEL_LIST_PARAMETERS = [
    OpenApiParameter("server_alias", str, description="Only this server's models."),
    OpenApiParameter("search", str, description="Part of the name, path or alias; a hash prefix."),
    OpenApiParameter("limit", int, description="Page size (default 50, at most 200)."),
    OpenApiParameter("offset", int),
    TOTAL_COUNT_PARAMETER,
]


class CheckpointListView(APIView):
    """Every checkpoint of every server (from the model cache), with the servers that
    have it."""

    @extend_schema(
        parameters=MODEL_LIST_PARAMETERS,
        responses={
            200: OpenApiResponse(
                CheckpointSerializer(many=True),
                description="One page of checkpoints; the total in X-Total-Count.",
            ),
            **NOT_FOUND,
        },
        summary="List checkpoints",
    )
    def get(self, request: Request) -> Response:
        return _list_models(request, kind=ModelKind.CHECKPOINT)


class LoraListView(APIView):
    """Every LoRA of every server (from the model cache), with the servers that have it."""

    @extend_schema(
        parameters=MODEL_LIST_PARAMETERS,
        responses={
            200: OpenApiResponse(
                LoraSerializer(many=True),
                description="One page of LoRAs; the total in X-Total-Count.",
            ),
            **NOT_FOUND,
        },
        summary="List LoRAs",
    )
    def get(self, request: Request) -> Response:
        return _list_models(request, kind=ModelKind.LORA)


class ServerRefreshModelsView(APIView):
    """Rewrites the server's model cache: the admin scope only (a client reads the cache)."""

    permission_classes = ADMIN_WRITES

    @extend_schema(
        request=None,
        responses={200: RefreshResultSerializer, 502: ErrorSerializer},
        summary="Refresh a server's checkpoints and LoRAs now",
    )
    def post(self, request: Request, alias: str) -> Response:
        server = server_get(alias=alias)
        result = server_refresh_models(server=server)
        if result.error:
            raise ServerUnreachable(server.alias, result.error)
        body = {"message": f"Models of '{server.alias}' refreshed.", **asdict(result)}
        body.pop("error")
        return Response(body)


class ServerPauseView(APIView):
    """Pause a server (admin): its running job finishes, no new job starts there; its jobs
    wait as pending and "any" jobs go to other servers."""

    permission_classes = ADMIN_ONLY

    @extend_schema(
        request=None, responses={200: ServerEnvelopeSerializer}, summary="Pause a server"
    )
    def post(self, request: Request, alias: str) -> Response:
        server = server_pause(server=server_get(alias=alias))
        body = {"message": f"Server '{server.alias}' paused.", "server": server}
        return Response(ServerEnvelopeSerializer(body).data)


class ServerResumeView(APIView):
    """Resume a paused server (admin): it takes jobs again at once."""

    permission_classes = ADMIN_ONLY

    @extend_schema(
        request=None, responses={200: ServerEnvelopeSerializer}, summary="Resume a server"
    )
    def post(self, request: Request, alias: str) -> Response:
        server = server_resume(server=server_get(alias=alias))
        body = {"message": f"Server '{server.alias}' resumed.", "server": server}
        return Response(ServerEnvelopeSerializer(body).data)


class ServerListsView(APIView):
    """A server's VAEs, modules, upscalers, prompt styles, scripts and ControlNet models,
    from the cache (refreshed with its models): what `vae`, `text_encoders`, `styles`,
    `hr_upscaler`, `alwayson_scripts` and `script_name` may name there."""

    @extend_schema(responses={200: ServerListsSerializer}, summary="A server's other lists")
    def get(self, request: Request, alias: str) -> Response:
        server = server_get(alias=alias)
        return Response(ServerListsSerializer(server_lists(server=server)).data)
