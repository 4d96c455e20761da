"""Data migrations of servers_app, run on rows as an older MobileSD stored them."""

import importlib

import pytest
from django.apps import apps
from model_bakery import baker

from servers_app.models import Server

pytestmark = pytest.mark.django_db

move_url_credentials = importlib.import_module(
    "servers_app.migrations.0004_username_validator_and_url_credentials"
).move_url_credentials


def test_credentials_inside_a_stored_url_move_to_their_fields():
    server = baker.make(Server, alias="Old", api_url="http://sd:pa%24%24@gpu-box:7860/sd")

    move_url_credentials(apps, None)

    server.refresh_from_db()
    assert (server.api_url, server.username, server.password) == (
        "http://gpu-box:7860/sd",
        "sd",
        "pa$$",
    )
    server.full_clean()  # the row is valid under today's rules


def test_credentials_already_in_their_fields_win_and_the_url_is_cleaned():
    server = baker.make(
        Server, alias="Old", api_url="http://x:y@gpu:7860", username="me", password="mine"
    )

    move_url_credentials(apps, None)

    server.refresh_from_db()
    assert (server.api_url, server.username, server.password) == ("http://gpu:7860", "me", "mine")


def test_urls_without_credentials_are_left_alone():
    server = baker.make(Server, alias="New", api_url="http://gpu:7860")
    updated_at = server.updated_at

    move_url_credentials(apps, None)

    server.refresh_from_db()
    assert (server.api_url, server.updated_at) == ("http://gpu:7860", updated_at)
