from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "servers_app"
    verbose_name = "Generation servers"

    def ready(self) -> None:
        from servers_app import receivers  # noqa: F401  (connects the receivers)
