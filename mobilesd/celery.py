"""The Celery application: web, worker and beat share its configuration from settings."""

import os
from functools import cached_property
from typing import Any

from celery import Celery
from celery.app import backends

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
