from django.apps import AppConfig
from django.conf import settings


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
