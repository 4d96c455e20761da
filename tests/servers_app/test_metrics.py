"""Servers' metrics at GET /metrics."""

import pytest
from django.test import Client
from model_bakery import baker

from servers_app.models import Server
from tests.metrics_support import scrape

pytestmark = pytest.mark.django_db


def test_servers_online_equal_the_databases_health(settings):
    settings.MOBILESD_METRICS_TOKEN = "t"
    baker.make(Server, alias="Laptop", is_online=True)
    baker.make(Server, alias="Desktop", is_online=False)
    baker.make(Server, alias="Old", is_online=True, enabled=False)
    baker.make(Server, alias="New", is_online=None)

    samples = scrape(Client(HTTP_AUTHORIZATION="Bearer t"))

    assert samples[("mobilesd_servers_online", frozenset())] == 1
    up = {
        dict(key)["server"]: value
        for (name, key), value in samples.items()
        if name == "mobilesd_server_up"
    }
    assert up == {"Laptop": 1, "Desktop": 0, "Old": 1, "New": 0}
