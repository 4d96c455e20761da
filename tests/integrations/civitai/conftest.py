"""Fixtures of the Civitai client and simulator tests."""

import pytest

from integrations.civitai.simulator import Catalog
from tests.integrations.civitai.catalog import sample_catalog


@pytest.fixture
def catalog() -> Catalog:
    return sample_catalog()
