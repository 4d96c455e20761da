"""Reading GET /metrics back in tests."""

from typing import Any

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families


def scrape(client: Client, **headers: Any) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics answer: (sample name, its labels) -> value."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples
