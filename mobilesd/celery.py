"""The Celery application: web, worker and beat share its configuration from settings."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilesd.settings")

app = Celery("mobilesd")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Each worker writes its heartbeat for /api/v1/health (by name: Django is not set up yet).
app.steps["worker"].add("core_app.worker:WorkerHeartbeatStep")
# Each worker hands new events on to webhooks within moments (PostgreSQL's LISTEN).
app.steps["worker"].add("notifications_app.listener:FanoutListenerStep")
