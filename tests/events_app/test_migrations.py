"""The event triggers through SQLite's migrations (the embedded default): a migration that
rebuilds a table another table's triggers name applies on a database whose triggers are
installed, as an upgrade meets it, and the triggers record changes afterwards."""

import json

from tests.support import start_python

# servers_app 0008 rebuilds the servers' table (SQLite cannot alter it in place), and the
# jobs' triggers name that table.
UPGRADE = """
import django, json
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
call_command("migrate", "servers_app", "0007", verbosity=0)
call_command("migrate", verbosity=0)
from events_app.models import Event
from events_app.triggers import _expected
from servers_app.models import Server
with connection.cursor() as cursor:
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    installed = sorted(row[0] for row in cursor.fetchall())
before = Event.objects.count()
Server.objects.create(alias="Upgraded", api_url="http://127.0.0.1:9")
print(json.dumps({
    "installed": installed,
    "expected": sorted(_expected()),
    "new_events": Event.objects.count() - before,
}))
"""


def test_an_upgrade_that_rebuilds_a_table_the_triggers_name_migrates_on_sqlite(tmp_path):
    result = start_python(tmp_path, UPGRADE)

    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["expected"]
    assert set(found["expected"]) <= set(found["installed"])
    assert found["new_events"] == 1
