"""Servers' metrics, from the database at each scrape (core_app.metrics)."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from servers_app.models import Server


class ServerCollector(Collector):
    """Each server's last health check (1 online, 0 not or never checked) and how many
    enabled servers are online; one query."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "mobilesd_server_up",
            "1 when the server answered its last health check, else 0.",
            labels=["server", "enabled"],
        )
        online = 0
        for alias, enabled, is_online in Server.objects.order_by("alias").values_list(
            "alias", "enabled", "is_online"
        ):
            up.add_metric([alias, "true" if enabled else "false"], 1 if is_online else 0)
            online += bool(enabled and is_online)
        yield up
        yield GaugeMetricFamily(
            "mobilesd_servers_online", "Enabled servers that are online.", value=online
        )
