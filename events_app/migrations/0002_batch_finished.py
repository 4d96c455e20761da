"""The batch.finished event (events_app.triggers): the triggers are installed again, as the
jobs' update trigger of SQLite changed under its name (on PostgreSQL a trigger is added)."""

from django.db import migrations


def install_event_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        return  # installed after the whole migrate (events_app.apps: post_migrate)
    from events_app.triggers import event_triggers_install

    event_triggers_install(force=True)


class Migration(migrations.Migration):
    dependencies = [("events_app", "0001_initial")]

    operations = [
        migrations.RunPython(install_event_triggers, migrations.RunPython.noop, elidable=False),
    ]
