from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections


def sqlite_migrate_with_work(using: str, plan: Any) -> bool:
    """Whether a pre_migrate signal announces a migrate with work to do on the default
    database, and that database is SQLite: the triggers whose bodies name other tables
    must go first (SQLite checks every trigger's body when a rebuilt table is renamed) and
    come back after it (post_migrate). events_app and queue_app drop theirs on it."""
    return using == DEFAULT_DB_ALIAS and bool(plan) and connections[using].vendor == "sqlite"


class CoreConfig(AppConfig):
    name = "core_app"
    verbose_name = "API keys, errors, health"

    def ready(self) -> None:
        from core_app import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from core_app.error_reporting import sentry_start

        # Here rather than in settings: web, worker and beat all load the apps, and logging
        # is configured by now (the warning of a missing extra is seen).
        sentry_start(
            dsn=settings.SENTRY_DSN,
            environment=settings.SENTRY_ENVIRONMENT,
            traces_sample_rate=settings.SENTRY_TRACES_SAMPLE_RATE,
        )
