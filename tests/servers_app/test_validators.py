"""What a server record may hold (servers_app.validators), through the API: an address
MobileSD may call, names without control or bidi characters, and a models folder that is
allowed, with one answer for every folder that is not."""

from pathlib import Path

import pytest
from model_bakery import baker

from servers_app.models import Server
from tests.support import assert_error, db_snapshot

pytestmark = pytest.mark.django_db

REFUSED_URLS = [
    "http://0.0.0.0:7860",
    "http://[::]:7860",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.3.4:7860",
    "http://[fe80::1]:7860",
    "http://[fd00:ec2::254]",
    "http://metadata.google.internal",
    "http://224.0.0.251:7860",
    "http://255.255.255.255",
    "http://2130706433:7860",
    "http://0177.0.0.1:7860",
    "http://0x7f.1:7860",
    "http://127.1:7860",
    "http://[::ffff:169.254.169.254]",
]


def create(client, **fields):
    return client.post("/api/v1/servers", {"alias": "A", **fields}, format="json")


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_url_mobilesd_may_not_call_is_refused_and_stores_nothing(client, url):
    before = db_snapshot()

    error = assert_error(create(client, api_url=url), 400, "invalid_url")

    assert list(error["fields"]) == ["api_url"]
    assert db_snapshot() == before


@pytest.mark.parametrize("url", REFUSED_URLS[:4])
def test_an_update_to_a_refused_url_is_refused(client, url):
    baker.make(Server, alias="L", api_url="http://127.0.0.1:7860")

    response = client.patch("/api/v1/servers/L", {"api_url": url}, format="json")

    assert_error(response, 400, "invalid_url")
    assert Server.objects.get().api_url == "http://127.0.0.1:7860"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:7860",
        "http://localhost:7860",
        "http://[::1]:7861",
        "http://192.168.1.20:7860",
        "http://10.1.2.3:7860",
        "http://gpu-box:7860",
    ],
)
def test_loopback_and_lan_servers_are_accepted(client, url):
    assert create(client, api_url=url).status_code == 201


@pytest.mark.parametrize("url", ["http://sd:pa55@gpu-box:7860", "http://sd@gpu-box:7860"])
def test_a_url_with_credentials_is_refused_and_never_stored_or_echoed(client, url):
    response = create(client, api_url=url)

    error = assert_error(response, 400, "invalid_url")
    assert "username" in error["message"]
    assert "pa55" not in response.content.decode()
    assert not Server.objects.exists()


UNSAFE = ["evil\u202egnp", "a\x1bb", "a\x85b", "a\u2066b", "a\u200fb", "a\x7fb"]


@pytest.mark.parametrize("alias", UNSAFE)
def test_an_alias_with_control_or_bidi_characters_is_refused(client, alias):
    error = assert_error(create(client, alias=alias, api_url="http://gpu:1"), 400, "invalid_name")

    assert list(error["fields"]) == ["alias"]
    assert not Server.objects.exists()


@pytest.mark.parametrize("username", UNSAFE)
def test_a_username_with_control_or_bidi_characters_is_refused(client, username):
    response = create(client, api_url="http://gpu:1", username=username, password="pw")

    assert list(assert_error(response, 400, "invalid_name")["fields"]) == ["username"]


def test_names_in_other_scripts_are_fine(client):
    response = create(client, alias="ゲーミングPC", api_url="http://gpu:1", username="jürgen")

    assert response.status_code == 201


# --- models_dir ------------------------------------------------------------------------


def test_models_dir_is_stored_normalised(client, tmp_path):
    response = create(client, api_url="http://gpu:1", models_dir=f"{tmp_path}//./")

    assert response.status_code == 201
    assert Server.objects.get().models_dir == str(tmp_path)
    assert response.json()["server"]["models_dir"] == str(tmp_path)


@pytest.mark.parametrize("suffix", ["/../etc", "/models/.."])
def test_models_dir_with_dot_dot_is_refused(client, tmp_path, suffix):
    (tmp_path / "models").mkdir()

    response = create(client, api_url="http://gpu:1", models_dir=f"{tmp_path}{suffix}")

    assert "'..'" in assert_error(response, 400, "models_dir_not_allowed")["message"]


def _refusal(client, path: Path | str) -> str:
    response = create(client, api_url="http://gpu:1", models_dir=str(path))
    return assert_error(response, 400, "models_dir_not_allowed")["fields"]["models_dir"][0]


def test_a_missing_folder_a_file_and_a_folder_outside_the_roots_get_one_answer(
    client, tmp_path, settings
):
    root, outside = tmp_path / "models", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "file.txt").write_text("x")
    settings.MOBILESD_MODELS_ROOTS = [str(root)]

    answers = {
        _refusal(client, root / "missing"),
        _refusal(client, root / "file.txt"),
        _refusal(client, outside),
        _refusal(client, "/etc"),
    }

    assert len(answers) == 1
    assert "missing" not in answers.pop()
    assert not Server.objects.exists()


def test_a_symlink_out_of_the_roots_is_refused(client, tmp_path, settings):
    root, outside = tmp_path / "models", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "sneaky").symlink_to(outside)
    settings.MOBILESD_MODELS_ROOTS = [str(root)]

    _refusal(client, root / "sneaky")


def test_a_folder_inside_a_root_is_accepted(client, tmp_path, settings):
    (tmp_path / "a" / "gpu-box").mkdir(parents=True)
    settings.MOBILESD_MODELS_ROOTS = [str(tmp_path / "b"), str(tmp_path / "a")]

    response = create(client, api_url="http://gpu:1", models_dir=str(tmp_path / "a" / "gpu-box"))

    assert response.status_code == 201


def test_without_roots_any_existing_folder_is_accepted(client, tmp_path, settings):
    settings.MOBILESD_MODELS_ROOTS = []

    assert create(client, api_url="http://gpu:1", models_dir=str(tmp_path)).status_code == 201


def test_blank_models_dir_means_no_downloads_and_is_fine(client):
    assert create(client, api_url="http://gpu:1", models_dir="").status_code == 201


def test_a_bad_url_beside_another_bad_field_is_a_plain_validation_error(client):
    response = create(client, api_url="http://0.0.0.0:1", slots=0)

    error = assert_error(response, 400, "validation_error")
    assert set(error["fields"]) == {"api_url", "slots"}
