"""Small jobs run in the test's own process, for the engine's tests."""

from typing import Any

from core_app.scopes import local_user
from queue_app.engine import server_run
from queue_app.models import Job
from queue_app.services import job_submit
from servers_app.models import Server


def submit(target: str, **params: Any) -> Job:
    """A 4-step 64x64 job for `target` ("a lighthouse" unless a prompt is given)."""
    params.setdefault("positive_prompt", "a lighthouse")
    params.update(steps=4, width=64, height=64)
    job, _ = job_submit(owner=local_user(), target_server_alias=target, generation_params=params)
    return job


def run(server: Server, job: Job) -> Job:
    """Run the server's queue here until it is empty; the job as it ended."""
    server_run(server.pk)
    job.refresh_from_db()
    return job
