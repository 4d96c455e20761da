"""The Civitai simulator follows REFERENCE.md C (checklist E), over real HTTP."""

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from integrations.civitai.simulator import (
    Catalog,
    CivitaiSimulator,
    SimFile,
    SimModel,
    SimulatorConfig,
    SimVersion,
    file_hashes,
    safetensors_bytes,
)

AGENT = {"User-Agent": "MobileSD-test/1"}
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"}


@pytest.fixture
def sim(catalog):
    with CivitaiSimulator(
        SimulatorConfig(catalog=catalog, retry_after=0, api_keys={"buyer-key"})
    ) as running:
        yield running


def get(sim, path, **kwargs):
    kwargs.setdefault("headers", AGENT)
    return requests.get(f"{sim.url}{path}", timeout=5, allow_redirects=False, **kwargs)


def test_hashes_follow_the_scanner_test_vector():
    hashes = file_hashes(iter([b"hello world"]), 11, b"hello wo")

    assert hashes == {
        "SHA256": "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9",
        "AutoV2": "B94D27B993",
        "CRC32": "85114A0D",  # little-endian byte order, unlike zlib's 0D4A1185
    }


def test_autov3_skips_the_safetensors_header_and_autov1_reads_64k_at_1mib():
    import hashlib

    payload = bytes(range(256)) * 9000
    data = safetensors_bytes(payload, {"a": "b"})
    hashes = SimFile(1, "x.safetensors", data).hashes
    header = 8 + int.from_bytes(data[:8], "little")

    assert hashes["AutoV3"] == hashlib.sha256(data[header:]).hexdigest()[:12].upper()
    assert hashes["AutoV1"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8].upper()


def test_meta_is_null_unless_asked_for(sim):
    body = get(sim, "/api/v1/images", params={"imageId": 5001}).json()

    assert body["items"][0]["meta"] is None


def test_meta_on_the_image_id_path_is_wrapped_unless_flat(sim):
    wrapped = get(sim, "/api/v1/images", params={"imageId": 5001, "withMeta": "true"}).json()
    flat = get(
        sim, "/api/v1/images", params={"imageId": 5001, "withMeta": "true", "flatMeta": "true"}
    ).json()

    assert wrapped["items"][0]["meta"]["id"] == 5001
    assert wrapped["items"][0]["meta"]["meta"]["steps"] == 28
    assert flat["items"][0]["meta"]["steps"] == 28


def test_mature_images_need_a_browsing_level(sim):
    hidden = get(sim, "/api/v1/images", params={"imageId": 5004}).json()
    shown = get(sim, "/api/v1/images", params={"imageId": 5004, "browsingLevel": 31}).json()
    by_nsfw = get(sim, "/api/v1/images", params={"imageId": 5004, "nsfw": "X"}).json()

    assert hidden["items"] == []
    assert [i["id"] for i in shown["items"]] == [5004]
    assert [i["id"] for i in by_nsfw["items"]] == [5004]


def test_too_many_pages_is_a_429_and_bad_limits_a_400(sim):
    assert get(sim, "/api/v1/images", params={"page": 11, "limit": 100}).status_code == 429
    assert get(sim, "/api/v1/images", params={"limit": 500}).status_code == 400


def test_by_hash_matches_every_hash_type_in_any_case(sim, catalog):
    checkpoint = catalog.file(1000)[2]
    for name in ("SHA256", "AutoV1", "AutoV2", "AutoV3", "CRC32"):
        response = get(sim, f"/api/v1/model-versions/by-hash/{checkpoint.hashes[name].lower()}")
        assert response.status_code == 200, name
        assert response.json()["id"] == 100

    assert get(sim, "/api/v1/model-versions/by-hash/DEADBEEF00").json() == {
        "error": "Model not found"
    }


def test_model_and_version_errors(sim):
    assert get(sim, "/api/v1/models/abc").status_code == 400
    assert get(sim, "/api/v1/models/12345").json() == {"error": "No model with id 12345"}
    assert get(sim, "/api/v1/model-versions/99999").json() == {"error": "Model not found"}
    assert requests.post(f"{sim.url}/api/v1/models/10", timeout=5).status_code == 405


def test_model_lists_versions_with_primary_only_on_the_primary_file(sim):
    version = get(sim, "/api/v1/models/10").json()["modelVersions"][0]

    assert [("primary" in f) for f in version["files"]] == [True, False, False]


def test_download_redirects_to_signed_storage_with_content_disposition(sim):
    redirect = get(sim, "/api/download/models/100")
    storage = requests.get(redirect.headers["Location"], headers=AGENT, timeout=5)

    assert redirect.status_code == 307
    assert redirect.headers["Cache-Control"] == "no-store, max-age=0"
    assert storage.status_code == 200
    assert (
        storage.headers["Content-Disposition"]
        == 'attachment; filename="juggernautXL_v9.safetensors"'
    )
    assert storage.headers["Accept-Ranges"] == "bytes"


def test_storage_honours_range_and_refuses_past_the_end(sim, catalog):
    location = get(sim, "/api/download/models/200").headers["Location"]
    size = catalog.file(2000)[2].length

    part = requests.get(location, headers={**AGENT, "Range": "bytes=100-"}, timeout=5)
    past = requests.get(location, headers={**AGENT, "Range": f"bytes={size}-"}, timeout=5)

    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert part.content == catalog.file(2000)[2].content[100:]
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{size}"


def test_a_tampered_signature_is_refused(sim):
    location = get(sim, "/api/download/models/200").headers["Location"]

    assert requests.get(location.replace("sig=", "sig=0"), timeout=5).status_code == 403


def test_download_picks_the_file_by_format_precision_and_id(sim):
    def name_of(params):
        location = get(sim, "/api/download/models/100", params=params).headers["Location"]
        return requests.head(location, timeout=5).headers["Content-Disposition"]

    assert "juggernautXL_v9_fp32" in name_of({"fp": "fp32"})
    assert "juggernautXL_vae" in name_of({"fileId": 1002})
    assert get(sim, "/api/download/models/100", params={"format": "GGUF"}).status_code == 404


@pytest.mark.parametrize(
    ("version", "status", "body"),
    [
        (
            300,
            401,
            {
                "error": "Unauthorized",
                "message": "The creator of this asset requires you to be logged in to download it",
            },
        ),
        (
            600,
            401,
            {
                "error": "Unauthorized",
                "message": "The creator of this asset has disabled downloads on this file",
            },
        ),
        (
            400,
            403,
            {
                "error": "Early Access",
                "deadline": "2030-01-01T00:00:00.000Z",
                "message": "This asset is in Early Access. You can use Buzz access it now!",
            },
        ),
        (500, 410, {"error": "Model archived, not available for download"}),
        (12345, 404, {"error": "File not found"}),
        (
            960,
            401,
            {
                "error": "Unauthorized",
                "message": "The creator of this asset requires you to be logged in to download it",
            },
        ),
    ],
)
def test_download_error_table(sim, version, status, body):
    response = get(sim, f"/api/download/models/{version}")

    assert (response.status_code, response.json()) == (status, body)


def test_signed_in_without_a_grant_is_403_and_with_one_a_redirect(sim):
    sim.config.api_keys.add("someone-else")
    refused = get(
        sim, "/api/download/models/960", headers={**AGENT, "Authorization": "Bearer someone-else"}
    )
    allowed = get(
        sim, "/api/download/models/960", headers={**AGENT, "Authorization": "Bearer buyer-key"}
    )
    by_token = get(sim, "/api/download/models/960", params={"token": "buyer-key"})

    assert refused.json() == {"error": "You do not have access to download this file"}
    assert allowed.status_code == 307
    assert by_token.status_code == 307


def test_an_unknown_key_is_anonymous_not_a_401(sim):
    assert (
        get(sim, "/api/v1/models/10", headers={**AGENT, "Authorization": "Bearer nope"}).status_code
        == 200
    )
    assert (
        get(
            sim, "/api/download/models/100", headers={**AGENT, "Authorization": "Bearer nope"}
        ).status_code
        == 307
    )


def test_browsers_get_text_and_a_login_redirect(sim):
    archived = get(sim, "/api/download/models/500", headers=BROWSER)
    login = get(sim, "/api/download/models/300", headers=BROWSER)

    assert archived.headers["Content-Type"] == "text/plain"
    assert archived.text == "Model archived, not available for download"
    assert login.status_code == 307
    assert login.headers["Location"].startswith("/login")


def test_download_rate_limit_and_injected_failures(sim):
    sim.faults.rate_limit_downloads = True
    limited = get(sim, "/api/download/models/100")
    sim.faults.rate_limit_downloads = False
    sim.faults.fail_next("/api/v1/models/", 503, times=1)

    assert limited.status_code == 429
    assert "unusual amount of downloading" in limited.json()["error"]
    assert limited.headers["Retry-After"] == "0"
    assert get(sim, "/api/v1/models/10").status_code == 503
    assert get(sim, "/api/v1/models/10").status_code == 200


def test_a_cut_transfer_sends_exactly_the_bytes_asked_for(sim, catalog):
    sim.faults.drop_after_bytes, sim.faults.drop_times = 1000, 1
    location = get(sim, "/api/download/models/200").headers["Location"]

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(location, timeout=5).content  # noqa: B018

    assert sim.storage_bytes_sent == 1000


def test_a_catalog_file_may_live_on_disk(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(safetensors_bytes(b"\x00" * 5000))
    model = SimModel(
        1,
        "Disk",
        "Checkpoint",
        [SimVersion(11, "v1", [SimFile(111, "big.safetensors", path=str(path), primary=True)])],
    )

    with CivitaiSimulator(SimulatorConfig(catalog=Catalog([model], []))) as sim:
        location = get(sim, "/api/download/models/11").headers["Location"]
        assert requests.get(location, timeout=5).content == path.read_bytes()


def test_the_command_offers_local_files_until_sigterm(tmp_path):
    repo = Path(__file__).resolve().parents[3]
    model = tmp_path / "mine.safetensors"
    model.write_bytes(safetensors_bytes(b"weights" * 1000))
    proc = subprocess.Popen(
        [
            sys.executable, "manage.py", "civitai_simulator", "--port", "0",
            "--file", f"{model}:LORA", "--api-key", "k", "--require-login",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:

        def url_line() -> str:
            assert proc.stdout is not None
            while "Civitai simulator on" not in (line := proc.stdout.readline()):
                assert line, "the command ended early"
            return line

        with ThreadPoolExecutor(max_workers=1) as pool:
            line = pool.submit(url_line).result(timeout=60)
        url = re.search(r"on (http://\S+)", line).group(1)

        version = requests.get(f"{url}/api/v1/model-versions/10001", timeout=5).json()
        anonymous = requests.get(
            f"{url}/api/download/models/10001", timeout=5, allow_redirects=False
        )
        signed_in = requests.get(
            f"{url}/api/download/models/10001", headers={"Authorization": "Bearer k"}, timeout=5
        )

        assert (version["model"]["type"], version["files"][0]["name"]) == (
            "LORA",
            "mine.safetensors",
        )
        assert anonymous.status_code == 401
        assert signed_in.content == model.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
