from django.apps import AppConfig


class DebugConfig(AppConfig):
    name = "debug_app"
    verbose_name = "Debugging"
