"""Shapes of the debug endpoints, as SEED_API.md documents them."""

from rest_framework import serializers

from servers_app.models import ModelKind


class VerifyCheckpointQuerySerializer(serializers.Serializer):
    checkpoint_path = serializers.CharField(max_length=2000)
    server_alias = serializers.CharField(max_length=100)


class VerifyCheckpointSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    original_path = serializers.CharField()
    normalized_path = serializers.CharField(help_text="The path with the server's separator.")
    matched_model = serializers.CharField(allow_null=True, help_text="The server's exact title.")
    available_models = serializers.ListField(child=serializers.CharField())
    match_rule = serializers.CharField(allow_null=True, help_text="Which input form matched.")
    close_matches = serializers.ListField(
        child=serializers.CharField(), help_text="Near names, or the ambiguous matches."
    )
    message = serializers.CharField()


class ModelsCacheQuerySerializer(serializers.Serializer):
    server_alias = serializers.CharField(required=False, allow_blank=True, max_length=100)
    kind = serializers.ChoiceField(choices=list(ModelKind.values), default="checkpoint")


class CachedModelEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    path = serializers.CharField()
    normalized_path = serializers.CharField()
    hash = serializers.CharField(allow_null=True)
    title = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    server_alias = serializers.CharField()
    kind = serializers.CharField()
    sha256 = serializers.CharField(allow_null=True)
    stale = serializers.BooleanField()


class ModelsCacheSerializer(serializers.Serializer):
    cache_size = serializers.IntegerField(help_text="Models matching the filter, all pages.")
    models = CachedModelEntrySerializer(many=True)
