from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications_app"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The push tasks live in a module of their own (tasks.py is the webhooks'); Celery's
        # autodiscovery finds only `tasks`, so they are registered here.
        from notifications_app import push_tasks  # noqa: F401
