from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate


def _install_event_triggers(sender: Any, *, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    # After every migrate (and flush): SQLite loses a table's triggers when Django rebuilds it.
    if using == DEFAULT_DB_ALIAS:
        from events_app.triggers import event_triggers_install

        event_triggers_install()


class EventsConfig(AppConfig):
    name = "events_app"
    verbose_name = "Events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(
            _install_event_triggers, sender=self, dispatch_uid="events_app.triggers"
        )
        from core_app.changes import change_feed_install
        from events_app.feeds import EventFeed

        change_feed_install(EventFeed())
