"""Shared by the push notification tests: a receiver, users' targets, finished jobs."""

import io
import ipaddress
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from model_bakery import baker
from PIL import Image

from events_app.models import Event
from events_app.selectors import events_after
from events_app.sequencer import events_sequence
from integrations.destinations import SETTING
from integrations.ntfy.simulator import NtfySimulator
from notifications_app.models import PushTarget
from notifications_app.push_services import push_target_create
from queue_app.images import save_image_file
from queue_app.models import Job, JobImage, JobStatus
from servers_app.models import Server

PROMPT = "a lighthouse at dusk, dramatic clouds, volumetric light, highly detailed, 8k"


def allow_loopback(settings: Any) -> None:
    setattr(settings, SETTING, (ipaddress.ip_network("127.0.0.0/8"),))


def user(name: str) -> Any:
    found, _ = get_user_model().objects.get_or_create(username=name)
    return found


def target(owner: Any, sim: NtfySimulator, topic: str = "phone", **fields: Any) -> PushTarget:
    return push_target_create(
        owner=owner,
        name=fields.pop("name", f"{owner.username}'s phone"),
        url=sim.apprise_url(topic),
        events=fields.pop("events", ["job.completed", "job.failed", "batch.finished"]),
        **fields,
    )


def png(size: tuple[int, int] = (640, 480)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def new_job(owner: Any, server: Server | None = None, **fields: Any) -> Job:
    server = (
        server
        or Server.objects.filter(alias="Laptop").first()
        or baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")
    )
    return baker.make(
        Job,
        owner=owner,
        server=server,
        target_server_alias=server.alias,
        generation_params={"positive_prompt": PROMPT, "steps": 5},
        **fields,
    )


def add_image(job: Job, index: int = 0) -> JobImage:
    stored = save_image_file(job_id=job.pk, index=index, data=png(), seed=42, when=timezone.now())
    return JobImage.objects.create(
        job=job, index=index, file=stored.name, width=stored.width, height=stored.height
    )


def finish(
    job: Job, status: str = JobStatus.COMPLETED, *, seconds: float = 12, **details: Any
) -> Job:
    """Finish the job as the engine does (its row updated: the triggers write the event);
    a completed job's result_details lists its images' file names in index order, as
    queue_app.dispatch.job_complete writes them."""
    now = timezone.now()
    if status == JobStatus.COMPLETED and "images" not in details:
        files = job.images.order_by("index").values_list("file", flat=True)
        if files:
            details["images"] = [PurePosixPath(name).name for name in files]
    Job.objects.filter(pk=job.pk).update(
        status=status,
        started_at=now - timedelta(seconds=seconds),
        completed_at=now,
        result_details=details or None,
    )
    job.refresh_from_db()
    return job


def new_events(after: int = 0) -> list[Event]:
    """The events written since public id `after`, numbered, in order."""
    events_sequence()
    return events_after(after, owner_id=None)
