"""Model downloads' metrics, from the database at each scrape (core_app.metrics)."""

from collections.abc import Iterator

from django.db.models import Count, Sum
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from civitai_app.models import Download, DownloadStatus


class DownloadCollector(Collector):
    """Downloads and the bytes they have fetched, by status; one GROUP BY."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = {
            row["status"]: (row["n"], row["fetched"] or 0)
            for row in Download.objects.values("status")
            .annotate(n=Count("pk"), fetched=Sum("bytes_done"))
            .order_by("status")
        }
        downloads = GaugeMetricFamily(
            "mobilesd_downloads", "Model downloads by status.", labels=["status"]
        )
        fetched = GaugeMetricFamily(
            "mobilesd_download_bytes",
            "Bytes fetched by the model downloads, by their status.",
            labels=["status"],
        )
        for status in DownloadStatus.values:
            count, fetched_bytes = rows.get(status, (0, 0))
            downloads.add_metric([status], count)
            fetched.add_metric([status], fetched_bytes)
        yield downloads
        yield fetched
