"""A real worker's database connections (queue_app.connections): once ready, it has opened
and warmed those of its enabled servers' loops, and keeps them open in its pool."""

import pytest
from django.db import connection
from model_bakery import baker

from queue_app.connections import CONNECTIONS_PER_SERVER
from servers_app.models import Server
from tests.integration.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def worker_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'mobilesd worker'"
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_a_starting_worker_warms_the_connections_of_its_enabled_servers(engine):
    baker.make(Server, enabled=True, _quantity=2)
    baker.make(Server, enabled=False)
    before = worker_connections()  # w1's, which started with no server

    worker = engine.start_worker("w2")
    warmed = 2 * CONNECTIONS_PER_SERVER
    worker.wait_for_output(
        f"Warmed {warmed} database connections for 2 enabled servers", timeout=30
    )

    # Kept open in its pool once warmed, beside the ones w2's other threads opened.
    assert wait_until(lambda: worker_connections() >= before + warmed, timeout=10)
