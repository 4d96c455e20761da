"""SENTRY_DSN turns error reporting on."""

import logging
import sys

import pytest
import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from core_app.error_reporting import sentry_start


@pytest.fixture
def init_calls(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(sentry_sdk, "init", lambda **kwargs: calls.append(kwargs))
    return calls


def test_sentry_starts_with_the_dsn_and_the_django_and_celery_integrations(init_calls):
    assert sentry_start(dsn="https://key@sentry.example/1", environment="prod") is True

    (call,) = init_calls
    assert call["dsn"] == "https://key@sentry.example/1"
    assert call["environment"] == "prod"
    assert call["send_default_pii"] is False
    kinds = {type(integration) for integration in call["integrations"]}
    assert kinds == {DjangoIntegration, CeleryIntegration}


def test_sentry_is_not_started_without_a_dsn(init_calls):
    assert sentry_start(dsn="") is False
    assert init_calls == []


def test_a_dsn_without_the_extra_installed_warns_and_goes_on(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # what an absent package raises

    with caplog.at_level(logging.WARNING, logger="core_app.error_reporting"):
        assert sentry_start(dsn="https://key@sentry.example/1") is False

    assert "sentry-sdk is not installed" in caplog.text


def test_the_app_starts_sentry_from_the_settings(init_calls, settings):
    from django.apps import apps

    settings.SENTRY_DSN = "https://key@sentry.example/2"

    apps.get_app_config("core_app").ready()

    assert [call["dsn"] for call in init_calls] == ["https://key@sentry.example/2"]
