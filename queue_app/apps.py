from django.apps import AppConfig


class QueueConfig(AppConfig):
    name = "queue_app"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from queue_app import receivers  # noqa: F401  (connects the receivers)
