"""img2img and inpaint for real: images uploaded through the API, the job submitted
through it, run by a Celery worker on a Forge simulator over HTTP."""

import io

import pytest
from model_bakery import baker
from PIL import Image

from queue_app.models import Job, JobImage
from servers_app.models import Server
from tests.integration.test_engine import assert_all_completed, wait_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def png(color: int | tuple[int, int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (64, 64), color).save(out, "PNG")
    return out.getvalue()


def uploaded(client, data: bytes) -> str:
    response = client.generic("POST", "/api/v1/uploads", data, content_type="image/png")
    assert response.status_code == 201, response.content
    return response.json()["upload_id"]


def test_an_inpaint_job_with_an_uploaded_image_and_mask_completes_with_those_exact_bytes(
    engine, sims, client
):
    sim = sims()
    baker.make(Server, alias="inpaint-laptop", api_url=sim.url)
    init_bytes = png((20, 160, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    out = io.BytesIO()
    mask.save(out, "PNG")
    mask_bytes = out.getvalue()
    init_id, mask_id = uploaded(client, init_bytes), uploaded(client, mask_bytes)

    response = client.post(
        "/api/v1/generate",
        {
            "target_server_alias": "inpaint-laptop",
            "generation_params": {
                "positive_prompt": "a red door",
                "mode": "inpaint",
                "init_images": [init_id],
                "mask": mask_id,
                "denoising_strength": 0.9,
                "steps": 4,
                "width": 64,
                "height": 64,
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["mobilesd_job_id"])

    assert_all_completed(wait_finished([job]))
    inputs = sim.last_img2img_inputs
    assert inputs is not None
    assert (inputs.init_images, inputs.mask) == ([init_bytes], mask_bytes)
    assert sim.request_count("POST", "/sdapi/v1/img2img") == 1
    stored = JobImage.objects.get(job=job)
    with stored.file.open("rb") as handle:
        result = Image.open(handle).convert("RGB")
    # The unmasked right half is the init image's, untouched; the masked half is repainted.
    assert result.getpixel((48, 32)) == (20, 160, 40)
    assert result.getpixel((16, 32)) != (20, 160, 40)
