"""The admin's login: failed logins are limited per client address."""

import types

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core_app import throttling

LOGIN = "/admin/login/"


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("operator", "op@example.com", "right-pass")


@pytest.fixture
def limited(settings, frozen_window) -> int:
    settings.MOBILESD_FAILED_ATTEMPTS_LIMIT = 3
    settings.MOBILESD_FAILED_ATTEMPTS_WINDOW = 60
    return 3


def log_in(client: Client, password: str):
    return client.post(LOGIN, {"username": "operator", "password": password, "next": "/admin/"})


def test_wrong_passwords_beyond_the_limit_lock_the_address_out(operator, limited):
    browser = Client(REMOTE_ADDR="203.0.113.7")
    wrong = [log_in(browser, "wrong").status_code for _ in range(limited)]

    refused = log_in(browser, "right-pass")

    assert wrong == [200] * limited  # the form again, with Django's message
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert "_auth_user_id" not in browser.session


def test_another_address_can_still_log_in(operator, limited):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(limited):
        log_in(attacker, "wrong")

    response = log_in(Client(REMOTE_ADDR="198.51.100.2"), "right-pass")

    assert response.status_code == 302


def test_a_right_password_works_once_the_window_passed(operator, limited, monkeypatch):
    now = [1_000_040.0]  # 20 s into the 60 s window that starts at 1_000_020
    clock = types.SimpleNamespace(time=lambda: now[0], monotonic=throttling.time.monotonic)
    monkeypatch.setattr(throttling, "time", clock)
    browser = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(limited):
        log_in(browser, "wrong")
    assert log_in(browser, "right-pass").status_code == 429

    now[0] += 40

    response = log_in(browser, "right-pass")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_successful_logins_are_not_counted(operator, limited):
    browser = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(limited + 1):
        assert log_in(browser, "right-pass").status_code == 302
        browser.logout()
