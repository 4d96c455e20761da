"""Query parameters of the model lists."""

from rest_framework import serializers


class ModelListQuerySerializer(serializers.Serializer):
    """`server_alias` (only that server's models) and `search` (name, path, alias, hash)."""

    server_alias = serializers.CharField(required=False, allow_blank=True, max_length=100)
    search = serializers.CharField(required=False, allow_blank=True, max_length=200)
