"""A server's measured speed (servers_app.performance): what a completed job records, and
the estimates read from it."""

import pytest
from model_bakery import baker

from servers_app.models import Server, ServerPerformance
from servers_app.performance import ALPHA, Estimator, Work, server_performance_record

SMALL = Work(width=512, height=512, steps=20)


def test_work_counts_every_images_steps_and_both_hires_passes():
    work = Work(width=512, height=768, steps=20, images=3, hires_scale=2.0, hires_steps=10)

    assert work.shape == "512x768 hr 2"
    assert work.step_images == (20 + 10) * 3
    assert work.megapixel_steps == pytest.approx((512 * 768 * 20 + 1024 * 1536 * 10) * 3 / 1e6)


def test_a_server_without_measurements_has_no_estimate():
    estimator = Estimator.of(None)

    assert not estimator.known
    assert estimator.run_seconds(SMALL) is None
    assert estimator.load_seconds("a.safetensors") == 0.0


@pytest.mark.django_db
def test_a_completed_job_records_its_seconds_per_step_image_for_its_shape():
    server = baker.make(Server, alias="Laptop")

    server_performance_record(server_id=server.pk, work=SMALL, run_seconds=4.0)

    row = ServerPerformance.objects.get(server=server)
    assert row.step_seconds == {"512x512": {"mean": 0.2, "n": 1}}
    assert row.jobs_measured == 1
    assert Estimator.of(row).run_seconds(Work(width=512, height=512, steps=30, images=2)) == (
        pytest.approx(0.2 * 60)
    )


@pytest.mark.django_db
def test_the_mean_is_plain_at_first_then_weighs_the_newest_by_alpha():
    server = baker.make(Server, alias="Laptop")
    for seconds in (2.0, 4.0):  # 0.1 and 0.2 per step
        server_performance_record(server_id=server.pk, work=SMALL, run_seconds=seconds)
    assert ServerPerformance.objects.get(server=server).step_seconds["512x512"]["mean"] == 0.15

    for _ in range(10):
        server_performance_record(server_id=server.pk, work=SMALL, run_seconds=20.0)
    mean = ServerPerformance.objects.get(server=server).step_seconds["512x512"]["mean"]
    expected = 0.15
    for n in range(2, 12):
        expected += max(ALPHA, 1 / (n + 1)) * (1.0 - expected)
    assert mean == pytest.approx(expected, abs=1e-5)


@pytest.mark.django_db
def test_a_switching_job_records_the_load_as_its_seconds_beyond_the_generation():
    server = baker.make(Server, alias="Laptop")
    server_performance_record(server_id=server.pk, work=SMALL, run_seconds=2.0)

    server_performance_record(server_id=server.pk, work=SMALL, run_seconds=9.5, loaded="b.ckpt")

    row = ServerPerformance.objects.get(server=server)
    assert row.load_seconds == {"b.ckpt": {"mean": 7.5, "n": 1}}
    assert row.step_seconds["512x512"] == {"mean": 0.1, "n": 1}  # a load is no generation
    estimator = Estimator.of(row)
    assert estimator.load_seconds("b.ckpt") == 7.5
    assert estimator.load_seconds("never-loaded.ckpt") == 7.5  # the server's mean load


@pytest.mark.django_db
def test_a_load_is_not_recorded_before_its_shape_has_an_estimate():
    server = baker.make(Server, alias="Laptop")

    server_performance_record(server_id=server.pk, work=SMALL, run_seconds=9.5, loaded="b.ckpt")

    row = ServerPerformance.objects.get(server=server)
    assert row.load_seconds == {}
    assert row.step_seconds == {}


def test_an_unmeasured_shape_is_scaled_by_megapixels_from_the_measured_ones():
    estimator = Estimator({"512x512": {"mean": 0.1, "n": 3}})

    seconds = estimator.run_seconds(Work(width=1024, height=1024, steps=10))

    assert seconds == pytest.approx(0.1 * 4 * 10)
