from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate


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


class QueueConfig(AppConfig):
    name = "queue_app"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from queue_app import receivers  # noqa: F401  (connects the receivers)

        post_migrate.connect(_install_job_counts, sender=self, dispatch_uid="queue_app.counts")
        post_migrate.connect(_install_job_previews, sender=self, dispatch_uid="queue_app.previews")
