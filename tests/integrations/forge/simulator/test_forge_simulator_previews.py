"""Live previews of the Forge / A1111 simulator, over real HTTP: when a new preview (and a
new `id_live_preview`) exists, what it looks like, and the options that shape it
(`live_previews_enable`, `show_progress_every_n_steps`, `live_previews_image_format`,
`show_progress_grid`), as `modules/progress.py` and `modules/shared_state.py` do.

Jobs sample at 10 ms a step and are interrupted at the end of each test.
"""

import base64
import io
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from integrations.forge.simulator import ForgeSimulator, SimulatorConfig

TIMEOUT = 10


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


@pytest.fixture
def make_sim(pool: ThreadPoolExecutor) -> Iterator[Callable[..., ForgeSimulator]]:
    """Simulators, each interrupted and stopped before `pool` waits for its jobs."""
    started: list[ForgeSimulator] = []

    def factory(**options: Any) -> ForgeSimulator:
        sim = ForgeSimulator(SimulatorConfig(seconds_per_step=0.01)).start()
        started.append(sim)
        if options:
            response = requests.post(f"{sim.url}/sdapi/v1/options", json=options, timeout=5)
            assert response.status_code == 200
        return sim

    yield factory
    for sim in started:
        requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
        sim.stop()


def start_job(pool: ThreadPoolExecutor, sim: ForgeSimulator, **payload: Any) -> Future:
    """A txt2img of 1000 steps (~10 s) for task "T", once it samples."""
    body = {"force_task_id": "T", "steps": 1000, "width": 64, "height": 64, **payload}
    future = pool.submit(requests.post, f"{sim.url}/sdapi/v1/txt2img", json=body, timeout=30)
    poll(lambda: progress(sim)["state"]["sampling_step"] > 0)
    return future


def internal(sim: ForgeSimulator, **body: Any) -> dict[str, Any]:
    response = requests.post(
        f"{sim.url}/internal/progress", json={"id_task": "T", **body}, timeout=5
    )
    assert response.status_code == 200
    return response.json()


def progress(sim: ForgeSimulator, skip_current_image: bool = True) -> dict[str, Any]:
    query = {"skip_current_image": str(skip_current_image).lower()}
    return requests.get(f"{sim.url}/sdapi/v1/progress", params=query, timeout=5).json()


def poll(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


def preview_image(answer: dict[str, Any]) -> Image.Image:
    encoded = answer["live_preview"].split(",", 1)[1]
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def test_a_preview_comes_with_its_id(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    start_job(pool, sim)

    answer = internal(sim)

    assert answer["live_preview"].startswith("data:image/png;base64,")
    assert answer["id_live_preview"] >= 1
    assert preview_image(answer).format == "PNG"


def test_asking_with_the_latest_id_before_the_period_gives_no_image_and_the_same_id(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=32)
    start_job(pool, sim)
    first = poll(lambda: (answer := internal(sim))["live_preview"] and answer)

    again = internal(sim, id_live_preview=first["id_live_preview"])

    assert again["live_preview"] is None
    assert again["id_live_preview"] == first["id_live_preview"]


def test_a_new_preview_takes_the_next_id_once_the_period_has_passed(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=5)
    start_job(pool, sim)
    first = poll(lambda: (answer := internal(sim))["live_preview"] and answer)

    later = poll(
        lambda: (
            (answer := internal(sim, id_live_preview=first["id_live_preview"]))["live_preview"]
            and answer
        )
    )

    assert later["id_live_preview"] == first["id_live_preview"] + 1
    assert later["live_preview"] != first["live_preview"]


def test_the_preview_forms_from_noise_towards_the_final_image(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    job = start_job(pool, sim, steps=60, seed=7)
    early = preview_image(internal(sim))
    late = poll(
        lambda: (
            (answer := internal(sim))["live_preview"]
            and progress(sim)["state"]["sampling_step"] > 45
            and preview_image(answer)
        )
    )
    final = Image.open(
        io.BytesIO(base64.b64decode(job.result(timeout=TIMEOUT).json()["images"][0]))
    )

    def distance(image: Image.Image) -> float:
        return sum(
            ImageStat.Stat(ImageChops.difference(image.convert("RGB"), final.convert("RGB"))).mean
        )

    assert distance(late) < distance(early)


def test_no_preview_when_the_request_asks_for_none(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    start_job(pool, sim)

    answer = internal(sim, live_preview=False, id_live_preview=3)

    assert (answer["live_preview"], answer["id_live_preview"]) == (None, 3)


def test_no_preview_when_live_previews_are_disabled(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1, live_previews_enable=False)
    start_job(pool, sim)

    answer = internal(sim)

    assert (answer["live_preview"], answer["id_live_preview"]) == (None, -1)


@pytest.mark.parametrize(("option", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_the_preview_format_follows_the_option(make_sim, pool, option, pil_format):
    sim = make_sim(show_progress_every_n_steps=1, live_previews_image_format=option)
    start_job(pool, sim)

    answer = internal(sim)

    assert answer["live_preview"].startswith(f"data:image/{option};base64,")
    assert preview_image(answer).format == pil_format


def test_a_period_of_minus_one_previews_only_a_finished_batch(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=-1)
    start_job(pool, sim, steps=100, n_iter=2)
    during_first_batch = internal(sim)

    second_batch = poll(lambda: (answer := internal(sim))["live_preview"] and answer)

    assert during_first_batch["live_preview"] is None
    assert progress(sim)["state"]["job_no"] == 1
    assert second_batch["id_live_preview"] == 1


def test_a_batch_previews_as_a_grid_unless_the_option_says_otherwise(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    start_job(pool, sim, batch_size=2)
    first = internal(sim)
    requests.post(f"{sim.url}/sdapi/v1/options", json={"show_progress_grid": False}, timeout=5)

    later = poll(
        lambda: (
            (answer := internal(sim, id_live_preview=first["id_live_preview"]))["live_preview"]
            and answer
        )
    )

    grid, single = preview_image(first), preview_image(later)

    assert (grid.size, single.size) == ((128, 64), (64, 64))


def test_sdapi_progress_sends_the_current_image_as_bare_base64_unless_skipped(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    start_job(pool, sim)

    with_image = progress(sim, skip_current_image=False)
    skipped = progress(sim, skip_current_image=True)

    image = Image.open(io.BytesIO(base64.b64decode(with_image["current_image"], validate=True)))
    assert image.format == "PNG"
    assert skipped["current_image"] is None


def test_a_new_job_starts_its_previews_from_id_one(make_sim, pool):
    sim = make_sim(show_progress_every_n_steps=1)
    start_job(pool, sim)
    poll(lambda: internal(sim)["id_live_preview"] > 5)
    requests.post(f"{sim.url}/sdapi/v1/interrupt", timeout=5)
    poll(lambda: progress(sim)["state"]["job_count"] == 0)

    start_job(pool, sim)
    answer = internal(sim)

    # The progress polls that saw the job start may have made one preview already.
    assert 1 <= answer["id_live_preview"] <= 2
