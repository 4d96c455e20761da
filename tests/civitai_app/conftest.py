"""Fixtures of the Civitai tests: a catalogue with real file bytes, the Civitai simulator
as a real HTTP server, and servers whose models folder is a temporary directory."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from model_bakery import baker

from integrations.civitai.simulator import (
    Catalog,
    CivitaiSimulator,
    SimulatorConfig,
)
from servers_app.models import Server
from tests.integrations.civitai.catalog import sample_catalog


@pytest.fixture
def catalog() -> Catalog:
    return sample_catalog()


@pytest.fixture
def civitai(settings, catalog) -> Iterator[CivitaiSimulator]:
    """The Civitai simulator, with MobileSD pointed at it and tuned for fast tests."""
    sim = CivitaiSimulator(SimulatorConfig(catalog=catalog, retry_after=0, api_keys={"buyer-key"}))
    sim.start()
    settings.CIVITAI_BASE_URL = sim.url
    settings.CIVITAI_API_KEY = ""
    settings.CIVITAI_MAX_RETRIES = 2
    settings.CIVITAI_BACKOFF_SECONDS = 0.01
    settings.CIVITAI_BACKOFF_MAX_SECONDS = 0.02
    settings.MOBILESD_DOWNLOAD_FREE_SPACE_MARGIN_BYTES = 0
    settings.MOBILESD_DOWNLOAD_CHUNK_BYTES = 64 * 1024
    settings.MOBILESD_DOWNLOAD_READ_TIMEOUT = 5.0
    settings.MOBILESD_HEARTBEAT_SECONDS = 0.02
    yield sim
    sim.stop()


@pytest.fixture
def gpu_root(tmp_path: Path) -> Path:
    """An A1111 install as MobileSD sees it: models/ and embeddings/ side by side."""
    root = tmp_path / "gpu-box"
    (root / "models").mkdir(parents=True)
    (root / "embeddings").mkdir()
    return root


@pytest.fixture
def laptop(db, gpu_root: Path) -> Server:
    return baker.make(
        Server, alias="Laptop", api_url="http://127.0.0.1:9", models_dir=str(gpu_root / "models")
    )
