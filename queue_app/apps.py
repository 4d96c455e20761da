from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate, pre_migrate

from core_app.apps import sqlite_migrate_with_work


def _install_job_counts(sender: Any, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    # After every migrate (and flush): SQLite loses a table's triggers when Django rebuilds it.
    if using == DEFAULT_DB_ALIAS:
        from queue_app.counts import job_counts_install

        job_counts_install()


def _install_job_previews(sender: Any, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    # As the counts: SQLite drops the preview trigger with a rebuilt job table.
    if using == DEFAULT_DB_ALIAS:
        from queue_app.previews import job_previews_install

        job_previews_install()


def _drop_sqlite_job_triggers(
    sender: Any, *, using: str = DEFAULT_DB_ALIAS, plan: Any = None, **kwargs: Any
) -> None:
    """Before a migrate with work to do, on SQLite, the counts' and the preview's triggers
    go, and come back after it (post_migrate; the counts recounted), as the event triggers
    do (events_app.apps): their bodies name the counts' and the previews' tables, so SQLite
    would fail a migration that rebuilds either ("error in trigger
    queue_app_job_count_insert: no such table: main.queue_app_jobcount")."""
    if sqlite_migrate_with_work(using, plan):
        from queue_app.counts import job_counts_drop
        from queue_app.previews import job_previews_drop

        job_counts_drop()
        job_previews_drop()


class QueueConfig(AppConfig):
    name = "queue_app"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from queue_app import receivers  # noqa: F401  (connects the receivers)

        pre_migrate.connect(
            _drop_sqlite_job_triggers, sender=self, dispatch_uid="queue_app.triggers.drop"
        )
        post_migrate.connect(_install_job_counts, sender=self, dispatch_uid="queue_app.counts")
        post_migrate.connect(_install_job_previews, sender=self, dispatch_uid="queue_app.previews")
