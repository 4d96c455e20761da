from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core_app"
    verbose_name = "API keys, errors, health"
