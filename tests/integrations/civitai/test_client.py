"""The Civitai client against the simulator: auth, backoff, and every documented error."""

import pytest

from integrations.civitai.client import (
    USER_AGENT,
    CivitaiArchived,
    CivitaiClient,
    CivitaiEarlyAccess,
    CivitaiForbidden,
    CivitaiInterrupted,
    CivitaiLoginRequired,
    CivitaiNotFound,
    CivitaiRateLimited,
    CivitaiUnavailable,
    content_disposition_filename,
)
from integrations.civitai.simulator import CivitaiSimulator, SimulatorConfig


@pytest.fixture
def sim(catalog):
    config = SimulatorConfig(catalog=catalog, retry_after=0, api_keys={"buyer-key"})
    with CivitaiSimulator(config) as running:
        yield running


def client_for(sim, **options) -> CivitaiClient:
    options.setdefault("max_retries", 2)
    options.setdefault("backoff_seconds", 0.001)
    options.setdefault("read_timeout", 5)
    return CivitaiClient(base_url=sim.url, **options)


def test_requests_carry_a_non_browser_agent_and_the_key_as_bearer(sim):
    client_for(sim, api_key="buyer-key").model(10)

    request = sim.requests_to("/api/v1/models/10")[0]
    assert request.headers["user-agent"] == USER_AGENT
    assert "mozilla" not in USER_AGENT.lower()
    assert request.headers["authorization"] == "Bearer buyer-key"


def test_the_key_goes_to_civitai_only_never_to_storage_or_other_hosts(sim, catalog):
    client = client_for(sim, api_key="buyer-key")
    sim_url_elsewhere = sim.url.replace("127.0.0.1", "localhost")

    with client.open_download(f"{sim.url}/api/download/models/200") as response:
        b"".join(response.chunks(65536))
    client.fetch_image(f"{sim_url_elsewhere}/x/original=true/5001.png", max_bytes=10**6)

    storage = sim.requests_to("/storage/")[0]
    image = next(r for r in sim.requests if "/original=true/" in r.path)
    assert "authorization" not in storage.headers
    assert "authorization" not in image.headers


def test_image_asks_for_flat_meta_at_every_browsing_level(sim):
    item = client_for(sim).image(5004)

    query = sim.requests_to("/api/v1/images")[0].query
    assert query["withMeta"] == ["true"]
    assert query["flatMeta"] == ["true"]
    assert query["browsingLevel"] == ["31"]
    assert item is not None
    assert item["meta"] == {"prompt": "x", "steps": 20}


def test_wrapped_meta_of_an_older_deployment_is_unwrapped(catalog):
    config = SimulatorConfig(catalog=catalog, retry_after=0, honour_flat_meta=False)
    with CivitaiSimulator(config) as sim:
        item = client_for(sim).image(5001)

    assert item is not None
    assert item["meta"]["steps"] == 28


def test_an_image_civitai_does_not_show_is_none(sim):
    assert client_for(sim).image(424242) is None


def test_429_backs_off_and_retries_until_it_succeeds(sim):
    sleeps: list[float] = []
    sim.faults.fail_next("/api/v1/model-versions/", 429, times=2)

    version = client_for(sim, sleep=sleeps.append, backoff_seconds=1.0).model_version(100)

    assert version["id"] == 100
    assert sleeps == [1.0, 2.0]  # exponential
    assert len(sim.requests_to("/api/v1/model-versions/100")) == 3


def test_retry_after_is_honoured_and_backoff_capped(sim):
    sleeps: list[float] = []
    sim.faults.fail_next("/api/v1/models/", 503, times=2, headers={"Retry-After": "7"})

    client_for(sim, sleep=sleeps.append, backoff_seconds=1.0, backoff_max_seconds=5.0).model(10)

    assert sleeps == [5.0, 5.0]


def test_429_that_persists_is_rate_limited(sim):
    sim.faults.fail_next("/api/v1/models/", 429, times=10)

    with pytest.raises(CivitaiRateLimited, match="rate-limiting") as caught:
        client_for(sim).model(10)

    assert caught.value.http_status == 429
    assert caught.value.transient


@pytest.mark.parametrize(
    ("version", "error", "words"),
    [
        (300, CivitaiLoginRequired, "CIVITAI_API_KEY"),
        (600, CivitaiLoginRequired, "disabled downloads"),
        (400, CivitaiEarlyAccess, "Early Access on Civitai until 2030-01-01"),
        (500, CivitaiArchived, "archived"),
        (12345, CivitaiNotFound, "File not found"),
    ],
)
def test_download_errors_have_clear_messages(sim, version, error, words):
    with pytest.raises(error, match=words):
        client_for(sim).open_download(f"{sim.url}/api/download/models/{version}")


def test_a_rejected_key_says_so_rather_than_asking_for_one(sim):
    with pytest.raises(CivitaiLoginRequired, match="did not accept the configured API key"):
        client_for(sim, api_key="expired").open_download(f"{sim.url}/api/download/models/300")


def test_signed_in_without_access_is_forbidden(sim):
    sim.config.api_keys.add("other")

    with pytest.raises(CivitaiForbidden, match="does not allow this account") as caught:
        client_for(sim, api_key="other").open_download(f"{sim.url}/api/download/models/960")

    assert caught.value.http_status == 403


def test_download_rate_limit_is_retried_then_reported(sim):
    sim.faults.rate_limit_downloads = True

    with pytest.raises(CivitaiRateLimited, match="unusual amount of downloading"):
        client_for(sim).open_download(f"{sim.url}/api/download/models/100")

    assert len(sim.requests_to("/api/download/models/100")) == 3


def test_api_404s_and_unreachable_civitai(sim):
    with pytest.raises(CivitaiNotFound, match="Model version 99999 was not found on Civitai"):
        client_for(sim).model_version(99999)
    assert client_for(sim).model_version_by_hash("DEADBEEF00") is None
    with pytest.raises(CivitaiUnavailable, match="could not be reached"):
        CivitaiClient(base_url="http://127.0.0.1:9", max_retries=0).model(10)


def test_resuming_asks_storage_for_the_rest(sim, catalog):
    content = catalog.file(2000)[2].content

    with client_for(sim).open_download(
        f"{sim.url}/api/download/models/200", start=1000
    ) as response:
        body = b"".join(response.chunks(4096))

    assert (response.start, response.total, response.filename) == (
        1000,
        len(content),
        "add_detail.safetensors",
    )
    assert body == content[1000:]
    assert sim.requests_to("/storage/")[0].headers["range"] == "bytes=1000-"


def test_a_storage_that_ignores_range_is_reported_as_starting_at_zero(sim):
    sim.faults.ignore_range = True

    with client_for(sim).open_download(
        f"{sim.url}/api/download/models/200", start=1000
    ) as response:
        assert response.start == 0


def test_nothing_left_past_the_end_is_range_not_satisfiable(sim, catalog):
    size = catalog.file(2000)[2].length

    response = client_for(sim).open_download(f"{sim.url}/api/download/models/200", start=size)

    assert response.range_not_satisfiable
    assert response.total == size


def test_a_cut_transfer_is_interrupted(sim):
    sim.faults.drop_after_bytes, sim.faults.drop_times = 5000, 1

    with (
        pytest.raises(CivitaiInterrupted),
        client_for(sim).open_download(f"{sim.url}/api/download/models/200") as response,
    ):
        b"".join(response.chunks(1024))


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="a b.safetensors"', "a b.safetensors"),
        ("attachment; filename*=UTF-8''caf%C3%A9.safetensors", "café.safetensors"),
        ("inline", ""),
        ("", ""),
    ],
)
def test_content_disposition_file_names(header, name):
    assert content_disposition_filename(header) == name
