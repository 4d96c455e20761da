"""Live previews for real (#14 point 4): a Celery worker runs a 10-step job on a Forge
simulator over HTTP; the phone's view of it (GET .../preview and the job's progress)
changes while it runs, and the preview is gone once it has completed."""

import pytest
import requests
from model_bakery import baker

from core_app.scopes import local_user
from queue_app.models import FINISHED_STATUSES, Job, JobStatus
from queue_app.services import job_submit
from servers_app.models import Server
from tests.integration.procs import wait_until
from tests.support import assert_error

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_preview_changes_at_least_twice_during_a_10_step_job_and_goes_after(engine, sims, client):
    sim = sims(seconds_per_step=0.5)
    options = {"show_progress_every_n_steps": 1, "live_previews_image_format": "jpeg"}
    assert requests.post(f"{sim.url}/sdapi/v1/options", json=options, timeout=5).ok
    server = baker.make(Server, alias="preview-laptop", api_url=sim.url)
    params = {"positive_prompt": "a lighthouse", "steps": 10, "width": 512, "height": 768}
    job, _ = job_submit(
        owner=local_user(), target_server_alias=server.alias, generation_params=params
    )
    url = f"/api/v1/queue/jobs/{job.pk}/preview"

    seen: dict[str, bytes] = {}  # ETag -> image, while the job runs
    ids: set[int] = set()

    def three_previews() -> bool:
        status = client.get(f"/api/v1/queue/jobs/{job.pk}/status").json()
        if status["status"] == JobStatus.PROCESSING and status["progress"].get("preview_id"):
            ids.add(status["progress"]["preview_id"])
        response = client.get(url)
        if response.status_code == 200:
            seen[response["ETag"]] = b"".join(response.streaming_content)
        return len(seen) >= 3 and len(set(seen.values())) >= 3

    wait_until(three_previews, timeout=30, interval=0.2, what="three different previews")
    finished = wait_until(
        lambda: Job.objects.filter(pk=job.pk, status__in=FINISHED_STATUSES).first(),
        timeout=30,
        what="the job to finish",
    )

    assert finished.status == JobStatus.COMPLETED
    assert len(ids) >= 2
    assert all(image[:4] == b"RIFF" and image[8:12] == b"WEBP" for image in seen.values())
    assert_error(client.get(url), 404, "preview_not_found")
    assert Job.objects.get(pk=job.pk).progress.get("preview_id") is None
