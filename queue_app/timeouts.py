"""How long the queue waits for a generation server to answer a job.

A generating server sends nothing until it is done, so the read timeout of a job's
`txt2img` is in effect the job's time limit. It is scaled to the job's size and kept
generous: timing out a job that would have finished costs a whole rerun, while waiting too
long on a dead server only delays a retry (the heartbeat and progress probes notice a dead
server sooner). Its limits are settings (mobilesd/settings.py, "Timeouts of calls to
generation servers"), where their defaults are.
"""

from django.conf import settings

__all__ = ["job_timeout"]


def job_timeout(
    *,
    steps: int,
    width: int,
    height: int,
    images: int,
    hires: bool = False,
    hires_scale: float = 2.0,
    hires_steps: int | None = None,
    overhead: float | None = None,
    seconds_per_megapixel_step: float | None = None,
    floor: float | None = None,
    cap: float | None = None,
) -> float:
    """Read timeout in seconds for a `txt2img` of this size.

    ``timeout = clamp(overhead + rate * work, floor, cap)`` where
    ``work = images * steps * MP`` (MP = width * height / 10**6) plus, with hires fix,
    ``images * (hires_steps or steps) * MP * hires_scale**2`` for the second pass.

    Each limit not given here is its setting: `overhead` MOBILESD_FORGE_TIMEOUT_OVERHEAD
    (a checkpoint switch, the VAE decode, the transfer), `seconds_per_megapixel_step`
    (the rate) MOBILESD_FORGE_SECONDS_PER_MEGAPIXEL_STEP, `floor`
    MOBILESD_FORGE_TIMEOUT_FLOOR and `cap` MOBILESD_FORGE_TIMEOUT_CAP (never below
    `floor`).
    """
    if overhead is None:
        overhead = float(settings.MOBILESD_FORGE_TIMEOUT_OVERHEAD)
    if seconds_per_megapixel_step is None:
        seconds_per_megapixel_step = float(settings.MOBILESD_FORGE_SECONDS_PER_MEGAPIXEL_STEP)
    if floor is None:
        floor = float(settings.MOBILESD_FORGE_TIMEOUT_FLOOR)
    if cap is None:
        cap = float(settings.MOBILESD_FORGE_TIMEOUT_CAP)
    cap = max(cap, floor)

    megapixels = max(width, 1) * max(height, 1) / 1_000_000
    count = max(images, 1)
    first_pass_steps = max(steps, 1)
    work = count * first_pass_steps * megapixels
    if hires:
        second_pass_steps = hires_steps if hires_steps and hires_steps > 0 else first_pass_steps
        work += count * second_pass_steps * megapixels * max(hires_scale, 1.0) ** 2
    estimate = overhead + seconds_per_megapixel_step * work
    return float(min(max(estimate, floor), cap))
