"""POST /api/v1/generate and /batches with mode img2img / inpaint: the inputs are checked
(typed, the caller's own, the mask the init image's size) and kept with the job."""

import copy
import io
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from model_bakery import baker
from PIL import Image

from queue_app.models import Job, JobInput, JobInputRole, JobStatus, Upload
from queue_app.uploads import upload_create
from tests.queue_app.test_api_images import add_image, png_bytes
from tests.support import DOCUMENTED_GENERATE_REQUEST, assert_error, db_snapshot, key_client

URL = "/api/v1/generate"


def image(size: tuple[int, int] = (64, 48), color: Any = (0, 90, 200), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


@pytest.fixture
def alice(db, server) -> Any:
    return key_client("alice")


def upload_of(username: str, data: bytes | None = None) -> str:
    return str(upload_create(owner=user(username), data=data or image()).pk)


def body(**params: Any) -> dict[str, Any]:
    request = copy.deepcopy(DOCUMENTED_GENERATE_REQUEST)
    request["generation_params"].update(params)
    return request


def submit(api_client: Any, **params: Any) -> Any:
    return api_client.post(URL, body(**params), format="json")


def inputs_of(job_id: str) -> list[tuple[str, int, str]]:
    rows = JobInput.objects.filter(job_id=job_id).order_by("role", "position")
    return [(row.role, row.position, str(row.upload_id)) for row in rows]


def test_an_inpaint_job_keeps_its_init_image_and_mask(alice):
    init, mask = upload_of("alice"), upload_of("alice", image(mode="L", color=255))

    response = submit(alice, mode="inpaint", init_images=[init], mask=mask, mask_blur=8)

    assert response.status_code == 202, response.content
    job_id = response.json()["mobilesd_job_id"]
    assert inputs_of(job_id) == [(JobInputRole.INIT, 0, init), (JobInputRole.MASK, 0, mask)]
    params = alice.get(f"/api/v1/queue/jobs/{job_id}/status").json()["generation_params"]
    assert (params["mode"], params["init_images"], params["mask"]) == ("inpaint", [init], mask)


def test_an_img2img_job_takes_an_image_of_an_earlier_job_as_an_upload(alice, server):
    earlier = baker.make(
        Job,
        owner=user("alice"),
        server=server,
        target_server_alias=server.alias,
        status=JobStatus.COMPLETED,
    )
    stored = add_image(earlier, png_bytes((64, 48)))

    ref = {"job_id": str(earlier.pk), "index": 0}
    response = submit(alice, mode="img2img", init_images=[ref], denoising_strength=0.4)

    assert response.status_code == 202, response.content
    [(role, _, upload_id)] = inputs_of(response.json()["mobilesd_job_id"])
    upload = Upload.objects.get(pk=upload_id)
    with upload.file.open("rb") as copy_, stored.file.open("rb") as original:
        assert copy_.read() == original.read()
    assert (role, upload.owner, upload.width) == (JobInputRole.INIT, user("alice"), 64)


def test_the_same_job_image_twice_is_stored_once(alice, server):
    earlier = baker.make(Job, owner=user("alice"), server=server, target_server_alias="Laptop")
    add_image(earlier, png_bytes((64, 48)))
    ref = {"job_id": str(earlier.pk), "index": 0}

    submit(alice, mode="img2img", init_images=[ref])
    submit(alice, mode="img2img", init_images=[ref])

    assert Upload.objects.count() == 1


def stored_upload_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "uploads"
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


@pytest.mark.parametrize(
    ("whose", "code"),
    [("bob", "upload_not_found"), ("deleted", "upload_not_found"), ("unknown", "upload_not_found")],
)
def test_an_upload_that_is_not_the_callers_is_a_404_and_nothing_is_stored(alice, whose, code):
    upload_id = upload_of("alice") if whose == "deleted" else "0b5c7d1e-1111-4222-8333-444455556666"
    if whose == "bob":
        key_client("bob")
        upload_id = upload_of("bob")
    if whose == "deleted":
        alice.delete(f"/api/v1/uploads/{upload_id}")
    before = db_snapshot()

    response = submit(alice, mode="img2img", init_images=[upload_id])

    assert_error(response, 404, code)
    assert db_snapshot() == before


def test_another_users_job_image_is_a_404(alice, server):
    key_client("bob")
    theirs = baker.make(Job, owner=user("bob"), server=server, target_server_alias="Laptop")
    add_image(theirs, png_bytes((64, 48)))
    before = db_snapshot()

    response = submit(alice, mode="img2img", init_images=[{"job_id": str(theirs.pk), "index": 0}])

    assert_error(response, 404, "job_not_found")
    assert db_snapshot() == before
    assert stored_upload_files() == []


def test_a_missing_image_of_an_own_job_is_a_404(alice, server):
    mine = baker.make(Job, owner=user("alice"), server=server, target_server_alias="Laptop")

    response = submit(alice, mode="img2img", init_images=[{"job_id": str(mine.pk), "index": 3}])

    assert_error(response, 404, "image_not_found")


def test_a_mask_of_another_size_than_the_init_image_is_a_400_and_nothing_is_stored(alice):
    init, mask = upload_of("alice", image((64, 48))), upload_of("alice", image((48, 64)))
    before = db_snapshot()

    response = submit(alice, mode="inpaint", init_images=[init], mask=mask)

    error = assert_error(response, 400, "validation_error")
    assert error["fields"]["generation_params.mask"] == [
        "The mask is 48x64; it must be the size of the first init image, 64x48."
    ]
    assert db_snapshot() == before


def test_a_mask_check_that_fails_leaves_no_copy_of_a_job_image(alice, server):
    earlier = baker.make(Job, owner=user("alice"), server=server, target_server_alias="Laptop")
    add_image(earlier, png_bytes((64, 48)))
    mask = upload_of("alice", image((10, 10)))
    files = stored_upload_files()

    response = submit(
        alice,
        mode="inpaint",
        init_images=[{"job_id": str(earlier.pk), "index": 0}],
        mask=mask,
    )

    assert_error(response, 400, "validation_error")
    assert stored_upload_files() == files


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"mode": "inpaint", "init_images": ["U"]}, "generation_params.mask"),
        ({"mode": "img2img"}, "generation_params.init_images"),
        ({"init_images": ["U"]}, "generation_params.init_images"),
        ({"mode": "img2img", "init_images": ["U"], "mask": "U"}, "generation_params.mask"),
    ],
    ids=["inpaint-without-mask", "img2img-without-init", "init-without-mode", "mask-in-img2img"],
)
def test_inputs_that_do_not_fit_the_mode_are_a_400(alice, params, field):
    upload_id = upload_of("alice")
    params = {
        key: [upload_id] if value == ["U"] else upload_id if value == "U" else value
        for key, value in params.items()
    }

    error = assert_error(submit(alice, **params), 400, "validation_error")

    assert field in error["fields"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mode", "outpaint"),
        ("init_images", ["not-a-uuid"]),
        ("init_images", [42]),
        ("init_images", []),
        ("init_images", [{"job_id": "x", "index": 0}]),
        ("init_images", [{"job_id": "0b5c7d1e-1111-4222-8333-444455556666", "index": -1}]),
        ("mask", "not-a-uuid"),
        ("resize_mode", 4),
        ("mask_blur", -1),
        ("inpainting_fill", 7),
        ("inpaint_full_res", "yes"),
        ("inpaint_full_res_padding", 1000),
        ("inpainting_mask_invert", 2),
        ("denoising_strength", 1.5),
    ],
)
def test_out_of_range_or_mistyped_image_settings_are_a_400(alice, key, value):
    error = assert_error(submit(alice, **{key: value}), 400, "validation_error")

    assert any(path.startswith(f"generation_params.{key}") for path in error["fields"])


def test_two_init_images_are_refused_with_the_reason(alice):
    ids = [upload_of("alice"), upload_of("alice")]

    error = assert_error(submit(alice, mode="img2img", init_images=ids), 400, "validation_error")

    assert "generation_params.init_images" in error["fields"]


def test_a_batch_of_inpaint_jobs_keeps_the_inputs_of_each(alice):
    init, mask = upload_of("alice"), upload_of("alice", image(mode="L", color=255))
    request = {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "a cat", "mode": "inpaint", "mask": mask},
        "items": [{"init_images": [init]}, {"init_images": [init], "denoising_strength": 0.3}],
    }

    response = alice.post("/api/v1/batches", request, format="json")

    assert response.status_code == 202, response.content
    for job_id in response.json()["mobilesd_job_ids"]:
        assert inputs_of(job_id) == [(JobInputRole.INIT, 0, init), (JobInputRole.MASK, 0, mask)]


def test_a_batch_item_naming_another_users_upload_is_refused_whole(alice):
    key_client("bob")
    mine, theirs = upload_of("alice"), upload_of("bob")
    request = {
        "target_server_alias": "Laptop",
        "generation_params": {"positive_prompt": "a cat", "mode": "img2img"},
        "items": [{"init_images": [mine]}, {"init_images": [theirs]}],
    }
    before = db_snapshot()

    response = alice.post("/api/v1/batches", request, format="json")

    assert_error(response, 404, "upload_not_found")
    assert db_snapshot() == before


def test_a_txt2img_job_has_no_inputs(alice):
    response = submit(alice)

    assert inputs_of(response.json()["mobilesd_job_id"]) == []


def test_changing_a_pending_jobs_init_image_changes_its_inputs(alice):
    first, second = upload_of("alice"), upload_of("alice", image(color=(1, 1, 1)))
    job_id = submit(alice, mode="img2img", init_images=[first]).json()["mobilesd_job_id"]

    response = alice.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"init_images": [second]}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert inputs_of(job_id) == [(JobInputRole.INIT, 0, second)]


def test_changing_a_pending_job_to_another_users_upload_is_a_404_that_changes_nothing(alice):
    key_client("bob")
    job_id = submit(alice, mode="img2img", init_images=[upload_of("alice")]).json()[
        "mobilesd_job_id"
    ]
    theirs = upload_of("bob")
    before = db_snapshot()

    response = alice.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"init_images": [theirs]}},
        format="json",
    )

    assert_error(response, 404, "upload_not_found")
    assert db_snapshot() == before


def racing_removal(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each upload a submit resolves is deleted right after it was read, as
    uploads_remove_unused would in another transaction that commits then."""
    from queue_app import uploads

    removed: list[str] = []
    resolve = uploads.upload_get

    def resolve_then_remove(**kwargs: Any) -> Upload:
        upload = resolve(**kwargs)
        Upload.objects.filter(pk=upload.pk).delete()
        removed.append(str(upload.pk))
        return upload

    monkeypatch.setattr(uploads, "upload_get", resolve_then_remove)
    return removed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["init_images", "alwayson_scripts"])
def test_an_upload_removed_while_its_submit_is_in_flight_is_a_404_and_nothing_is_stored(
    alice, monkeypatch, where
):
    upload_id = upload_of("alice")
    params: dict[str, Any] = (
        {"mode": "img2img", "init_images": [upload_id]}
        if where == "init_images"
        else {"alwayson_scripts": {"ControlNet": {"args": [{"image": upload_id}]}}}
    )
    removed = racing_removal(monkeypatch)

    response = submit(alice, **params)

    assert removed == [upload_id]
    assert_error(response, 404, "upload_not_found")
    assert not Job.objects.exists()
    assert not JobInput.objects.exists()


def controlnet_unit(image_ref: str) -> dict[str, Any]:
    return {"ControlNet": {"args": [{"enabled": True, "module": "canny", "image": image_ref}]}}


def test_changing_a_pending_jobs_alwayson_scripts_re_resolves_its_unit_images(alice):
    first, second = upload_of("alice"), upload_of("alice", image(color=(1, 1, 1)))
    job_id = submit(alice, alwayson_scripts=controlnet_unit(first)).json()["mobilesd_job_id"]
    assert inputs_of(job_id) == [(JobInputRole.SCRIPT, 0, first)]

    response = alice.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"alwayson_scripts": controlnet_unit(second)}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert inputs_of(job_id) == [(JobInputRole.SCRIPT, 0, second)]
    # The first upload is no longer the job's: it may go once unused.
    assert not JobInput.objects.filter(upload_id=first).exists()


def test_dropping_a_pending_jobs_alwayson_scripts_drops_their_inputs(alice):
    unit = upload_of("alice")
    job_id = submit(alice, alwayson_scripts=controlnet_unit(unit)).json()["mobilesd_job_id"]

    response = alice.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"alwayson_scripts": {}}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert inputs_of(job_id) == []


def test_changing_alwayson_scripts_to_another_users_upload_is_a_404_that_changes_nothing(
    alice,
):
    key_client("bob")
    job_id = submit(alice, alwayson_scripts=controlnet_unit(upload_of("alice"))).json()[
        "mobilesd_job_id"
    ]
    theirs = upload_of("bob")
    before = db_snapshot()

    response = alice.patch(
        f"/api/v1/queue/jobs/{job_id}",
        {"generation_params": {"alwayson_scripts": controlnet_unit(theirs)}},
        format="json",
    )

    assert_error(response, 404, "upload_not_found")
    assert db_snapshot() == before
