"""SQLite (the embedded default) rebuilds a table for most schema changes: a new table, the
rows copied, the old one dropped, the new one renamed; and it checks every trigger's body at
the rename. A migration that rebuilds any table a trigger names must still apply, and the
triggers must work after it, whichever table a future migration touches."""

import json

from tests.support import start_python

# Each table some trigger names, rebuilt between the signals a `migrate` with work to do
# sends (its plan a migration with no operations of its own).
REBUILD_EVERY_NAMED_TABLE = """
import django, json, re
django.setup()
from django.apps import apps
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
from django.db import connection
from django.db.migrations import Migration

def triggers():
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        return dict(cursor.fetchall())

call_command("migrate", verbosity=0)
before = triggers()
named = [
    model for model in apps.get_models()
    if any(re.search(rf"\\b{model._meta.db_table}\\b", body) for body in before.values())
]
plan = [(Migration("0001_rebuild", "tests"), False)]
rebuilt, failed = [], {}
for model in named:
    emit_pre_migrate_signal(0, False, "default", plan=plan, apps=apps)
    try:
        with connection.schema_editor() as editor:
            editor._remake_table(model)
        rebuilt.append(model._meta.label)
    except Exception as exc:
        failed[model._meta.label] = str(exc)
    emit_post_migrate_signal(0, False, "default", plan=plan, apps=apps)
print(json.dumps({
    "named": sorted(model._meta.label for model in named),
    "rebuilt": sorted(rebuilt),
    "failed": failed,
    "before": before,
    "after": triggers(),
}))
"""


def test_every_table_a_trigger_names_can_be_rebuilt_and_the_triggers_come_back(tmp_path):
    result = start_python(tmp_path, REBUILD_EVERY_NAMED_TABLE)

    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # The tables the event, count and preview triggers name, among them their own.
    assert {"queue_app.Job", "queue_app.JobPreview", "events_app.Event"} <= set(found["named"])
    assert found["failed"] == {}
    assert found["rebuilt"] == found["named"]
    # The same triggers, as installed by the first migrate.
    assert found["after"] == found["before"]
