from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate, pre_migrate

from core_app.apps import sqlite_migrate_with_work


def _drop_sqlite_event_triggers(
    sender: Any, *, using: str = DEFAULT_DB_ALIAS, plan: Any = None, **kwargs: Any
) -> None:
    """Before a migrate with work to do, on SQLite: the triggers go, and come back after it
    (post_migrate). SQLite checks every trigger's body when a table is renamed, so a table
    Django rebuilds (a new table, the rows copied, the old one dropped, the new one renamed)
    while a trigger of another table names it fails the migration ("error in trigger
    events_queue_app_job_insert: no such table: main.servers_app_server"), whatever the
    order of the apps' migrations."""
    if sqlite_migrate_with_work(using, plan):
        from events_app.triggers import event_triggers_drop

        event_triggers_drop()


def _install_event_triggers(sender: Any, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    # After every migrate (and flush): on SQLite, dropped before it (above); a table Django
    # rebuilds loses its own triggers too.
    if using == DEFAULT_DB_ALIAS:
        from events_app.triggers import event_triggers_install

        event_triggers_install()


class EventsConfig(AppConfig):
    name = "events_app"
    verbose_name = "Events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        pre_migrate.connect(
            _drop_sqlite_event_triggers, sender=self, dispatch_uid="events_app.triggers.drop"
        )
        post_migrate.connect(
            _install_event_triggers, sender=self, dispatch_uid="events_app.triggers"
        )
        from core_app.changes import change_feed_install
        from events_app.feeds import EventFeed

        change_feed_install(EventFeed())
