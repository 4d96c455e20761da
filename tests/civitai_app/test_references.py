"""Civitai references: which image or model version a civitai.com URL names."""

import pytest

from civitai_app.references import image_id_from_url, model_reference_from_url
from core_app.errors import MobileSDError
from tests.civitai_app.support import request

# --- through a download request -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "version"),
    [
        ("https://civitai.com/models/10", 100),
        ("https://civitai.com/models/10/juggernaut-xl", 100),
        ("https://civitai.com/models/20/detail-tweaker?modelVersionId=200", 200),
        ("https://civitai.com/api/download/models/200", 200),
        ("https://civitai.com/api/v1/model-versions/200", 200),
    ],
)
def test_a_civitai_url_names_the_version(client, civitai, laptop, url, version):
    response = request(client, url=url)

    assert response.status_code == 202, response.json()
    assert response.json()["download"]["model_version_id"] == version


# --- the parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reference"),
    [
        ("https://civitai.com/models/10", (10, None)),
        ("https://www.civitai.com/models/10/juggernaut-xl/", (10, None)),
        ("http://civitai.green/models/20/x?modelVersionId=200", (20, 200)),
        ("https://civitai.com/api/download/models/200", (None, 200)),
        ("  https://civitai.com/api/v1/model-versions/200  ", (None, 200)),
    ],
)
def test_model_urls_name_a_model_and_maybe_a_version(url, reference):
    assert model_reference_from_url(url) == reference


def test_the_configured_civitai_host_is_accepted_too(settings):
    settings.CIVITAI_BASE_URL = "http://127.0.0.1:8765"

    assert model_reference_from_url("http://127.0.0.1:8765/models/10") == (10, None)
    assert image_id_from_url("http://127.0.0.1:8765/images/7") == 7


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/models/10",
        "ftp://civitai.com/models/10",
        "civitai.com/models/10",
        "https://civitai.com/images/10",
        "https://civitai.com/models/abc",
        "https://civitai.com/models/10?modelVersionId=x",
    ],
)
def test_anything_but_a_civitai_model_url_is_invalid(url):
    with pytest.raises(MobileSDError) as refused:
        model_reference_from_url(url)

    assert (refused.value.code, refused.value.status_code) == ("invalid_civitai_url", 400)


def test_an_image_url_names_its_id():
    assert image_id_from_url("https://civitai.com/images/123456") == 123456


@pytest.mark.parametrize(
    "url",
    [
        "https://civitai.com/images/0",
        f"https://civitai.com/images/{2**31}",
        "https://civitai.com/images/12/extra",
        "https://civitai.com/models/10",
        "https://evil.example/images/12",
    ],
)
def test_anything_but_a_civitai_image_url_is_invalid(url):
    with pytest.raises(MobileSDError) as refused:
        image_id_from_url(url)

    assert refused.value.code == "invalid_civitai_url"
