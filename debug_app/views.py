"""Debugging endpoints: checkpoint resolution against a live server, the model cache. For
the operator: the admin scope only."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core_app.errors import ServerUnreachable
from core_app.pagination import paginate
from core_app.permissions import ADMIN_ONLY
from core_app.serializers import ErrorSerializer
from debug_app.serializers import (
    ModelsCacheQuerySerializer,
    ModelsCacheSerializer,
    VerifyCheckpointQuerySerializer,
    VerifyCheckpointSerializer,
)
from servers_app.models import CachedModel, ModelKind
from servers_app.resolver import resolve
from servers_app.selectors import server_checkpoints, server_get, server_separator
from servers_app.services import server_refresh_models

# Statuses a view answers beyond those core_app.schema.AutoSchema adds to every operation
# that can give them (400 on input, 401, 403 on session writes, 404 on paths naming an
# object, 413/415 on bodies, 429, 500): a 404 for a server named in the query.
NOT_FOUND = {404: ErrorSerializer}


def _with_separator(path: str, separator: str) -> str:
    return path.replace("\\", "/").replace("/", separator)


class VerifyCheckpointView(APIView):
    """Resolve a checkpoint path against the server's live list (the cache is refreshed
    first), showing how the path was normalized and what it matched."""

    permission_classes = ADMIN_ONLY

    @extend_schema(
        parameters=[
            OpenApiParameter("checkpoint_path", str, required=True),
            OpenApiParameter("server_alias", str, required=True),
        ],
        responses={200: VerifyCheckpointSerializer, 502: ErrorSerializer, **NOT_FOUND},
        summary="Verify a checkpoint path on a server",
    )
    def get(self, request: Request) -> Response:
        query = VerifyCheckpointQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        requested = query.validated_data["checkpoint_path"]
        alias = query.validated_data["server_alias"]
        server = server_get(alias=alias)
        refreshed = server_refresh_models(server=server)
        if refreshed.error:
            raise ServerUnreachable(server.alias, refreshed.error)
        models = server_checkpoints(server=server)
        resolution = resolve(requested, models)
        return Response(
            {
                "success": resolution.model is not None,
                "original_path": requested,
                "normalized_path": _with_separator(requested, server_separator(server=server)),
                "matched_model": resolution.title,
                "available_models": sorted(model.title for model in models),
                "match_rule": resolution.rule or None,
                "close_matches": resolution.candidates,
                "message": resolution.message(server.alias),
            }
        )


def _cache_entry(model: CachedModel, separator: str) -> dict[str, Any]:
    slash = model.relative_path.replace("\\", "/")
    return {
        "id": model.pk,
        "name": model.name,
        "path": slash,
        "normalized_path": _with_separator(slash, separator),
        "hash": model.short_hash or (model.sha256[:10] if model.sha256 else None),
        "title": model.title,
        "aliases": list(dict.fromkeys([slash, slash.replace("/", "\\")])),
        "server_alias": model.server.alias,
        "kind": model.kind,
        "sha256": model.sha256 or None,
        "stale": model.server.models_stale,
    }


class ModelsCacheView(APIView):
    """The model cache as stored (checkpoints by default), for one server or all."""

    permission_classes = ADMIN_ONLY

    @extend_schema(
        parameters=[
            OpenApiParameter("server_alias", str),
            OpenApiParameter("kind", str, enum=list(ModelKind.values)),
            OpenApiParameter("limit", int, description="Default 50, at most 200."),
            OpenApiParameter("offset", int),
        ],
        responses={200: ModelsCacheSerializer, **NOT_FOUND},
        summary="The model cache",
    )
    def get(self, request: Request) -> Response:
        query = ModelsCacheQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        models = CachedModel.objects.filter(kind=query.validated_data["kind"])
        alias = query.validated_data.get("server_alias")
        if alias:
            models = models.filter(server=server_get(alias=alias))
        page, total, _, _ = paginate(
            request, models.select_related("server").order_by("server__alias", "name", "pk")
        )
        separators = {
            server.pk: server_separator(server=server) for server in {m.server for m in page}
        }
        return Response(
            {
                "cache_size": total,
                "models": [_cache_entry(m, separators[m.server_id]) for m in page],
            }
        )
