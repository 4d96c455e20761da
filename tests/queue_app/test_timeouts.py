"""The read timeout of a job's txt2img (queue_app.timeouts): scaled to the job's size,
clamped, its limits from settings."""

from typing import Any

import pytest

from queue_app.timeouts import job_timeout


def _limited(**size: Any) -> float:
    """`job_timeout` with fixed limits: 100 s overhead, 2 s per MP-step, 150 s .. 1000 s."""
    return job_timeout(
        overhead=100.0, seconds_per_megapixel_step=2.0, floor=150.0, cap=1000.0, **size
    )


def test_job_timeout_follows_formula() -> None:
    # 2 images x 50 steps x 1 MP x 2 s + 100 s overhead
    assert _limited(steps=50, width=1000, height=1000, images=2) == 300.0


def test_job_timeout_has_a_floor() -> None:
    assert _limited(steps=1, width=64, height=64, images=1) == 150.0


def test_job_timeout_has_a_cap() -> None:
    assert _limited(steps=150, width=2048, height=2048, images=8) == 1000.0


def test_job_timeout_counts_the_hires_pass() -> None:
    plain = _limited(steps=40, width=1000, height=1000, images=1)
    hires = _limited(steps=40, width=1000, height=1000, images=1, hires=True, hires_scale=1.5)

    assert plain == 180.0
    # second pass: 40 steps x (1 MP x 1.5^2) x 2 s
    assert hires - plain == pytest.approx(180.0)


def test_job_timeout_reads_limits_from_settings(settings: Any) -> None:
    settings.MOBILESD_FORGE_TIMEOUT_OVERHEAD = 10
    settings.MOBILESD_FORGE_SECONDS_PER_MEGAPIXEL_STEP = 1
    settings.MOBILESD_FORGE_TIMEOUT_FLOOR = 20
    settings.MOBILESD_FORGE_TIMEOUT_CAP = 40

    assert job_timeout(steps=10, width=1000, height=1000, images=1) == 20.0
    assert job_timeout(steps=25, width=1000, height=1000, images=1) == 35.0
    assert job_timeout(steps=99, width=1000, height=1000, images=1) == 40.0


def test_job_timeout_defaults_are_the_settings_defaults() -> None:
    # A tiny job waits the floor (300 s); a huge one no more than the cap (3600 s).
    assert job_timeout(steps=1, width=64, height=64, images=1) == 300.0
    assert job_timeout(steps=150, width=2048, height=2048, images=8) == 3600.0
