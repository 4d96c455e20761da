"""Server configuration API: /api/v1/servers[/<alias>]."""

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from core_app.errors import NotFound
from core_app.serializers import ErrorSerializer, MessageSerializer
from servers_app.models import Server
from servers_app.serializers import ServerEnvelopeSerializer, ServerSerializer
from servers_app.services import server_create, server_delete, server_update

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 404: ErrorSerializer}


class ServerViewSet(viewsets.ModelViewSet):
    """Generation servers, addressed by alias. The list is a plain array, as it always was."""

    queryset = Server.objects.all()
    serializer_class = ServerSerializer
    lookup_field = "alias"
    lookup_value_regex = "[^/]+"
    pagination_class = None
    filter_backends: list = []

    def get_object(self) -> Server:
        alias = self.kwargs["alias"]
        server = Server.objects.filter(alias=alias).first()
        if server is None:
            raise NotFound(f"Server '{alias}' not found.", code="server_not_found")
        return server

    @extend_schema(responses={201: ServerEnvelopeSerializer, **ERRORS})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = server_create(data=serializer.validated_data)
        body = {"message": "Server configuration added successfully.", "server": server}
        return Response(ServerEnvelopeSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: ServerEnvelopeSerializer, **ERRORS})
    def update(self, request: Request, *args: object, **kwargs: object) -> Response:
        partial = bool(kwargs.pop("partial", False))
        server = self.get_object()
        serializer = self.get_serializer(server, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        server = server_update(server=server, data=serializer.validated_data, partial=partial)
        body = {"message": "Server configuration updated successfully.", "server": server}
        return Response(ServerEnvelopeSerializer(body).data)

    @extend_schema(responses={200: MessageSerializer, 409: ErrorSerializer, **ERRORS})
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        server_delete(server=self.get_object())
        return Response({"message": "Server configuration deleted successfully."})
