"""The Celery application: web, worker and beat share its configuration from settings."""

import os
from functools import cached_property
from typing import Any

from celery import Celery
from celery.app import backends
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")


class MobileSDCelery(Celery):
    """Celery, with its result backend's class looked up once per process.

    Celery keeps a result backend instance per thread (the disabled one MobileSD uses is not
    thread-safe by its own account), and looks its class up for each, which scans every
    installed package's entry points: 5-13 ms of CPU for a thread's first task. The worker
    runs a thread per server, so a worker driving 32 servers spent about a quarter of a
    second under the GIL before its servers' first jobs could all start. The instances
    stay per thread; only the lookup is kept.
    """

    @cached_property
    def _backend_class_and_url(self) -> tuple[Any, str | None]:
        # (class, url); celery-types declares it as the class alone.
        found: Any = backends.by_url(self.backend_cls or self.conf.result_backend, self.loader)
        return found

    def _get_backend(self) -> Any:
        backend, url = self._backend_class_and_url
        return backend(app=self, url=url)


app = MobileSDCelery("mobilesd")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Each worker writes its heartbeat for /api/v1/health (by name: Django is not set up yet).
app.steps["worker"].add("core_app.worker:WorkerHeartbeatStep")
# Each worker hands new events on to webhooks within moments (PostgreSQL's LISTEN).
app.steps["worker"].add("notifications_app.listener:FanoutListenerStep")


@worker_init.connect
def _worker_connections(sender: Any = None, **_: Any) -> None:
    """A worker's own pool of database connections (queue_app.connections), sized for its
    threads, in place of the web tier's DATABASE_POOL_SIZE (a `.env` gives every process
    the same variables); none on SQLite, with WORKER_DATABASE_POOL off, or with
    DATABASE_CONN_MAX_AGE (Django pools only connections it closes). Before any task runs:
    every connection the worker opens reads these settings. Its connections are named in
    PostgreSQL's pg_stat_activity."""
    from django.conf import settings
    from django.db import connections

    from queue_app.connections import worker_pool_options

    concurrency = getattr(sender, "concurrency", None) or 1
    for alias in connections:
        database = connections.settings[alias]
        options = database.setdefault("OPTIONS", {})
        options.pop("pool", None)
        if database["ENGINE"] != "django.db.backends.postgresql":
            continue
        options.setdefault("application_name", "mobilesd worker")
        if settings.WORKER_DATABASE_POOL and not database.get("CONN_MAX_AGE"):
            options["pool"] = worker_pool_options(concurrency)


@beat_init.connect
def _beat_heartbeat(**_: Any) -> None:
    """Beat writes its heartbeat too, for the health check's `beat` (core_app.worker)."""
    from core_app.worker import beat_heartbeat_start

    beat_heartbeat_start()
