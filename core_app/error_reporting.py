"""Error reporting to Sentry, when SENTRY_DSN is set and the optional extra is installed
(`pip install 'mobilesd[sentry]'`)."""

import logging

logger = logging.getLogger(__name__)


def sentry_start(*, dsn: str, environment: str = "", traces_sample_rate: float = 0.0) -> bool:
    """Start reporting unhandled errors of Django views and Celery tasks to `dsn`; True if
    it started. No DSN: nothing is sent. A DSN without sentry-sdk installed: a warning,
    and MobileSD runs without reporting rather than not at all."""
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.integrations.django import DjangoIntegration
    except ImportError:
        logger.warning(
            "SENTRY_DSN is set but sentry-sdk is not installed: errors are not reported. "
            "Install the extra: pip install 'mobilesd[sentry]'."
        )
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=traces_sample_rate,
        # Prompts, API keys and server passwords stay here.
        send_default_pii=False,
    )
    return True
