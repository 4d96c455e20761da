"""The simulator's img2img and inpaint: output derived from the init image (and only the
masked area changed), the inputs recorded as the exact bytes sent, and the real servers'
errors for images that cannot be decoded."""

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig

TIMEOUT = 10
SIZE = 64


@pytest.fixture(scope="module", params=["forge-2", "a1111-1.10"])
def sim(request) -> Iterator[ForgeSimulator]:
    simulator = ForgeSimulator(SimulatorConfig(flavour=request.param, seconds_per_step=0)).start()
    yield simulator
    simulator.stop()


def png(color: tuple[int, int, int] | int, *, size: int = SIZE, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def half_mask(size: int = SIZE) -> bytes:
    """White (repaint) on the left half, black (keep) on the right."""
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def img2img(sim: ForgeSimulator, **body: Any) -> requests.Response:
    body.setdefault("steps", 2)
    body.setdefault("width", SIZE)
    body.setdefault("height", SIZE)
    body.setdefault("seed", 5)
    return requests.post(f"{sim.url}/sdapi/v1/img2img", json=body, timeout=TIMEOUT)


def output(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_a_low_denoising_strength_keeps_the_init_image_and_a_high_one_departs_from_it(sim):
    init = png((200, 30, 30))
    red = Image.open(io.BytesIO(init)).convert("RGB")

    low = output(img2img(sim, init_images=[b64(init)], denoising_strength=0.1))
    high = output(img2img(sim, init_images=[b64(init)], denoising_strength=0.9))

    assert mean_difference(low, red) < mean_difference(high, red)
    assert mean_difference(low, red) < 20


def test_the_init_image_is_resized_to_the_requested_size(sim):
    body = {"init_images": [b64(png((0, 0, 255), size=32))], "width": 96, "height": 80}

    assert output(img2img(sim, **body)).size == (96, 80)


def test_inpaint_changes_only_the_masked_area(sim):
    init = Image.open(io.BytesIO(png((10, 200, 10)))).convert("RGB")

    result = output(
        img2img(sim, init_images=[b64(png((10, 200, 10)))], mask=b64(half_mask()), seed=9)
    )

    right = (SIZE // 2, 0, SIZE, SIZE)
    left = (0, 0, SIZE // 2, SIZE)
    assert mean_difference(result.crop(right), init.crop(right)) == 0
    assert mean_difference(result.crop(left), init.crop(left)) > 10


def test_an_inverted_mask_changes_the_other_area(sim):
    init = Image.open(io.BytesIO(png((10, 200, 10)))).convert("RGB")

    result = output(
        img2img(
            sim,
            init_images=[b64(png((10, 200, 10)))],
            mask=b64(half_mask()),
            inpainting_mask_invert=1,
        )
    )

    left = (0, 0, SIZE // 2, SIZE)
    assert mean_difference(result.crop(left), init.crop(left)) == 0


def test_the_inputs_are_recorded_as_the_exact_bytes_sent(sim):
    init, mask = png((1, 2, 3)), half_mask()

    img2img(sim, init_images=[f"data:image/png;base64,{b64(init)}"], mask=b64(mask))

    assert sim.last_img2img_inputs is not None
    assert sim.last_img2img_inputs.init_images == [init]
    assert sim.last_img2img_inputs.mask == mask


def test_a_mask_that_is_not_an_image_is_the_servers_500(sim):
    response = img2img(sim, init_images=[b64(png((1, 2, 3)))], mask="bm90IGFuIGltYWdl")

    assert (response.status_code, response.json()["detail"]) == (500, "Invalid encoded image")


def test_the_answer_leaves_out_the_init_images_and_mask_unless_asked(sim):
    response = img2img(sim, init_images=[b64(png((1, 2, 3)))], mask=b64(half_mask()))

    parameters = response.json()["parameters"]
    assert (parameters["init_images"], parameters["mask"]) == (None, None)
