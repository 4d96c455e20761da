"""Helpers for the admin tests of every app: a job to show, and a page's buttons."""

from django.urls import reverse
from model_bakery import baker

from queue_app.models import ANY_SERVER, Job, JobStatus

PARAMS = {"positive_prompt": "a lighthouse at dusk", "steps": 5, "seed": 1234, "width": 64}


def make_job(server, status=JobStatus.PENDING, **fields) -> Job:
    return baker.make(
        Job,
        server=server,
        target_server_alias=server.alias if server else ANY_SERVER,
        status=status,
        generation_params=dict(PARAMS),
        **fields,
    )


def press(admin_client, name, obj, **kwargs):
    """POST one of the page's buttons (they are forms) and follow the redirect."""
    return admin_client.post(reverse(f"admin:{name}", args=[obj.pk]), follow=True, **kwargs)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]
