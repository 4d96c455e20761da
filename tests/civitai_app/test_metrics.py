"""Downloads' metrics at GET /metrics."""

import pytest
from django.test import Client
from model_bakery import baker

from civitai_app.models import Download, DownloadStatus
from tests.metrics_support import scrape

pytestmark = pytest.mark.django_db


def test_download_counts_and_bytes_equal_the_databases(settings):
    settings.MOBILESD_METRICS_TOKEN = "t"
    baker.make(Download, status=DownloadStatus.COMPLETED, bytes_done=1000)
    baker.make(Download, status=DownloadStatus.COMPLETED, bytes_done=2500)
    baker.make(Download, status=DownloadStatus.FAILED, bytes_done=700)

    samples = scrape(Client(HTTP_AUTHORIZATION="Bearer t"))

    def sample(name: str, status: str) -> float:
        return samples[(name, frozenset({("status", status)}))]

    assert sample("mobilesd_downloads", "completed") == 2
    assert sample("mobilesd_download_bytes", "completed") == 3500
    assert sample("mobilesd_download_bytes", "failed") == 700
    assert sample("mobilesd_downloads", "cancelled") == 0
