"""The data migrations that give script requirements their mode: servers_app 0009 (cache
rows, one a mode) and queue_app 0016 (active jobs' requirement_keys)."""

import importlib

import pytest
from django.apps import apps
from model_bakery import baker

from queue_app import dispatch
from queue_app.models import Job, JobStatus
from servers_app.models import CachedModel, ModelKind, Server

pytestmark = pytest.mark.django_db

servers_0009 = importlib.import_module("servers_app.migrations.0009_script_rows_per_mode")
queue_0016 = importlib.import_module("queue_app.migrations.0016_job_script_requirement_mode")


def old_script_row(server: Server, title: str, modes: list[str]) -> None:
    baker.make(
        CachedModel,
        server=server,
        kind=ModelKind.SCRIPT,
        title=title,
        name=title,
        relative_path=title,
        metadata={"modes": modes, "alwayson": False},
        requirement_key=f"script:{title.casefold()}",
    )


def test_old_rows_and_keys_become_per_mode_and_match_again():
    txt_only = baker.make(Server, alias="TxtOnly", api_url="http://x:2", is_online=True)
    both = baker.make(Server, alias="Both", api_url="http://x:3", is_online=True)
    old_script_row(txt_only, "X/Y/Z plot", ["txt2img"])
    old_script_row(both, "X/Y/Z plot", ["txt2img", "img2img"])
    job = baker.make(
        Job,
        target_server_alias="any",
        generation_params={"positive_prompt": "x", "mode": "inpaint"},
        requirement_keys=["file:ae", "script:x/y/z plot"],
    )
    done = baker.make(
        Job, status=JobStatus.COMPLETED, generation_params={}, requirement_keys=["script:a"]
    )

    servers_0009.split_script_rows(apps, None)
    queue_0016.add_modes(apps, None)

    assert sorted(CachedModel.objects.values_list("server__alias", "requirement_key")) == [
        ("Both", "script:img2img:x/y/z plot"),
        ("Both", "script:txt2img:x/y/z plot"),
        ("TxtOnly", "script:txt2img:x/y/z plot"),
    ]
    job.refresh_from_db()
    assert job.requirement_keys == ["file:ae", "script:img2img:x/y/z plot"]
    done.refresh_from_db()
    assert done.requirement_keys == ["script:a"]  # finished jobs' keys are never read
    Job.objects.filter(pk=job.pk).update(requirement_keys=["script:img2img:x/y/z plot"])
    assert dispatch.job_claim_next(server_id=txt_only.pk) is None
    assert dispatch.job_claim_next(server_id=both.pk).job_id == job.pk


def test_the_migrations_run_backwards():
    server = baker.make(Server, alias="Both", api_url="http://x:3")
    old_script_row(server, "ADetailer", [])
    job = baker.make(Job, generation_params={}, requirement_keys=["script:adetailer"])
    servers_0009.split_script_rows(apps, None)
    queue_0016.add_modes(apps, None)

    servers_0009.join_script_rows(apps, None)
    queue_0016.drop_modes(apps, None)

    row = CachedModel.objects.get()
    assert (row.relative_path, row.requirement_key) == ("ADetailer", "script:adetailer")
    job.refresh_from_db()
    assert job.requirement_keys == ["script:adetailer"]
