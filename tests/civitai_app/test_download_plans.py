"""What POST /api/v1/civitai/download-model resolves a request to before any row is
written: the file, its folder and name on each server, and every refusal (which changes
nothing)."""

import pytest
from model_bakery import baker

from civitai_app.models import Download
from servers_app.models import Server
from tests.civitai_app.support import request, snapshot
from tests.support import assert_error

# --- the file and where it goes -------------------------------------------------------------------


def test_the_file_choice_picks_format_precision_or_id(client, civitai, laptop):
    by_fp = request(client, model_version_id=100, precision="FP32").json()["download"]
    by_id = request(client, model_version_id=100, file_id=1002).json()["download"]

    assert by_fp["file_name"] == "juggernautXL_v9_fp32.safetensors"
    assert (by_id["file_name"], by_id["folder"]) == ("juggernautXL_vae.safetensors", "VAE")


def test_each_type_goes_to_its_folder(client, civitai, laptop, gpu_root):
    lora = request(client, model_version_id=200).json()["download"]
    embedding = request(client, model_version_id=900).json()["download"]

    assert lora["targets"][0]["path"] == str(
        gpu_root / "models" / "Lora" / "add_detail.safetensors"
    )
    assert embedding["targets"][0]["path"] == str(
        gpu_root / "embeddings" / "easynegative.safetensors"
    )


def test_a_chosen_file_name_keeps_the_extension(client, civitai, laptop):
    download = request(client, model_version_id=200, file_name="detail v2").json()["download"]

    assert download["file_name"] == "detail v2.safetensors"


def test_several_target_servers(client, civitai, laptop, tmp_path):
    (tmp_path / "desk").mkdir()
    baker.make(Server, alias="Desktop", api_url="http://x:1", models_dir=str(tmp_path / "desk"))

    response = request(
        client,
        model_version_id=200,
        target_server_alias=None,
        target_server_aliases=["Laptop", "Desktop", "Laptop"],
    )

    assert response.status_code == 202, response.json()
    assert [t["server_alias"] for t in response.json()["download"]["targets"]] == [
        "Desktop",
        "Laptop",
    ]


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name",
    [
        "../escape.safetensors",
        "../../../../etc/cron.d/job",
        "/etc/passwd",
        "..\\..\\windows.safetensors",
        "C:\\models\\x.safetensors",
        "sub/dir.safetensors",
        "CON",
        ".hidden",
        "evil\u202egnp.safetensors",
        "a\u2066b",
        "esc\x1b[31m",
        "c1\x9bx",
    ],
)
def test_file_names_that_could_escape_are_refused_and_change_nothing(
    client, civitai, laptop, file_name
):
    before = snapshot()

    body = assert_error(
        request(client, model_version_id=200, file_name=file_name), 400, "invalid_file_name"
    )

    assert "file_name" in body["message"]
    assert snapshot() == before
    assert civitai.requests == []  # refused before asking Civitai anything


def test_a_nul_in_the_file_name_is_refused(client, civitai, laptop):
    body = assert_error(
        request(client, model_version_id=200, file_name="a\u0000.x"), 400, "validation_error"
    )

    assert "file_name" in body["fields"]
    assert not Download.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_version_id": "abc"}, 400, "validation_error"),
        ({"model_version_id": 0}, 400, "validation_error"),
        ({"model_version_id": 1.5}, 400, "validation_error"),
        (
            {"model_version_id": 100, "url": "https://civitai.com/models/10"},
            400,
            "validation_error",
        ),
        ({}, 400, "validation_error"),
        ({"url": "https://example.com/models/10"}, 400, "invalid_civitai_url"),
        ({"url": "https://civitai.com/images/10"}, 400, "invalid_civitai_url"),
        ({"url": "https://civitai.com/models/10?modelVersionId=x"}, 400, "invalid_civitai_url"),
        ({"model_version_id": 100, "format": "zip"}, 400, "validation_error"),
        ({"model_version_id": 100, "size": "huge"}, 400, "validation_error"),
        ({"model_version_id": 100, "target_server_alias": "Nope"}, 404, "server_not_found"),
        ({"model_version_id": 100, "target_server_alias": 7}, 400, "validation_error"),
        ({"model_version_id": 100, "target_server_aliases": []}, 400, "validation_error"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_changes_nothing(client, civitai, laptop, body, status, code):
    before = snapshot()

    assert_error(request(client, **body), status, code)
    assert snapshot() == before


def test_a_server_without_a_models_folder_is_refused(client, civitai, db):
    baker.make(Server, alias="Laptop", api_url="http://x:1")

    body = assert_error(request(client, model_version_id=100), 400, "models_dir_not_set")
    assert "models_dir" in body["message"]


def test_an_unmounted_models_folder_is_refused(client, civitai, db, tmp_path):
    baker.make(
        Server, alias="Laptop", api_url="http://x:1", models_dir=str(tmp_path / "not-mounted")
    )

    assert_error(request(client, model_version_id=100), 400, "models_dir_missing")


def test_a_models_folder_outside_the_roots_gets_the_same_answer_as_a_missing_one(
    client, civitai, db, tmp_path, settings
):
    (tmp_path / "roots").mkdir()
    (tmp_path / "elsewhere").mkdir()
    settings.MOBILESD_MODELS_ROOTS = [str(tmp_path / "roots")]
    server = baker.make(Server, alias="Laptop", api_url="http://x:1")
    answers = []
    for folder in (tmp_path / "elsewhere", tmp_path / "roots" / "missing"):
        Server.objects.filter(pk=server.pk).update(models_dir=str(folder))
        body = assert_error(request(client, model_version_id=100), 400, "models_dir_missing")
        answers.append(body["message"])

    assert answers[0] == answers[1]
    assert str(tmp_path) not in answers[0]


def test_a_stored_models_folder_with_dot_dot_is_refused(client, civitai, db, gpu_root):
    baker.make(
        Server, alias="Laptop", api_url="http://x:1", models_dir=f"{gpu_root}/models/../models"
    )

    body = assert_error(request(client, model_version_id=100), 400, "models_dir_missing")
    assert "'..'" in body["message"]


def test_embeddings_beside_a_models_folder_at_a_root_are_refused_outside_the_roots(
    client, civitai, laptop, gpu_root, settings
):
    settings.MOBILESD_MODELS_ROOTS = [str(gpu_root / "models")]

    assert_error(request(client, model_version_id=900), 400, "embeddings_dir_missing")


def test_embeddings_need_the_installs_embeddings_folder(client, civitai, laptop, gpu_root):
    (gpu_root / "embeddings").rmdir()

    assert_error(request(client, model_version_id=900), 400, "embeddings_dir_missing")
    assert not (gpu_root / "embeddings").exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_version_id": 99999}, 404, "civitai_not_found"),
        ({"url": "https://civitai.com/models/99999"}, 404, "civitai_not_found"),
        ({"model_version_id": 100, "format": "GGUF"}, 404, "civitai_file_not_found"),
        ({"model_version_id": 100, "file_id": 2000}, 404, "civitai_file_not_found"),
        ({"model_version_id": 950}, 400, "unsupported_model_type"),
        ({"model_version_id": 500}, 410, "civitai_archived"),
    ],
)
def test_what_civitai_does_not_have_is_refused_before_queueing(
    client, civitai, laptop, body, status, code
):
    before = snapshot()

    assert_error(request(client, **body), status, code)
    assert snapshot() == before


def test_civitai_rate_limits_and_outages_have_their_status(client, civitai, laptop):
    civitai.faults.fail_next("/api/v1/model-versions/", 429, times=5)
    assert_error(request(client, model_version_id=100), 429, "civitai_rate_limited")

    civitai.faults.fail_next("/api/v1/model-versions/", 500, times=5)
    assert_error(request(client, model_version_id=100), 502, "civitai_unavailable")


def test_a_file_without_a_published_sha256_cannot_be_verified(client, civitai, laptop):
    civitai.config.catalog.file(2000)[2].hashes.pop("SHA256")

    assert_error(request(client, model_version_id=200), 409, "civitai_hash_unavailable")
