"""Fixtures of the webhook tests: a real receiver, and the settings that let MobileSD reach
it (loopback allowed) with short retry delays."""

import ipaddress
from collections.abc import Iterator

import pytest

from tests.notifications_app.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.stop()


@pytest.fixture
def loopback_allowed(settings) -> None:
    """Deliveries may go to this machine (the receiver), with short delays between tries."""
    settings.MOBILESD_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)
    settings.MOBILESD_WEBHOOK_RETRY_SECONDS = (0.3, 0.9)
    settings.MOBILESD_WEBHOOK_CONNECT_TIMEOUT = 2.0
    settings.MOBILESD_WEBHOOK_READ_TIMEOUT = 2.0
    settings.MOBILESD_WEBHOOK_LEASE_SECONDS = 5.0
