from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core_app"
    verbose_name = "API keys, errors, health"

    def ready(self) -> None:
        from core_app import schema  # noqa: F401  (registers the OpenAPI auth extension)
