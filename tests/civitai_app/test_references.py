"""Civitai references: which image or model version a civitai.com URL names."""

import pytest

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
