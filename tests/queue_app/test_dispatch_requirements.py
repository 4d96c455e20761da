"""An "any" job's requirements beyond its LoRAs (Job.requirement_keys: VAE, modules,
styles, upscaler, scripts, ControlNet models) in the claim (queue_app.dispatch)."""

import pytest
from django.db import connection
from django.utils import timezone
from model_bakery import baker

from queue_app import dispatch
from queue_app.extension_checks import job_requirement_keys
from queue_app.models import Job
from servers_app.extension_cache import file_rows, script_rows
from servers_app.models import CachedModel, ModelKind, Server
from tests.queue_app import test_dispatch
from tests.queue_app.test_dispatch import HEADS, assert_read_in_index_order, cache_loras, queue
from tests.support import explained

# The fixtures of the claim's own tests.
online = test_dispatch.online
deep_queue = test_dispatch.deep_queue


def cache_vae(server: Server, name: str) -> None:
    for row in file_rows(ModelKind.VAE, [{"model_name": name, "filename": f"/sd/VAE/{name}"}]):
        CachedModel.objects.create(server=server, **row.fields())


def cache_script(server: Server, name: str, *, modes: tuple[str, ...] = ("txt2img",)) -> None:
    for row in script_rows({mode: [name] for mode in modes}, []):
        CachedModel.objects.create(server=server, **row.fields())


@pytest.fixture
def desktop(db) -> Server:
    return baker.make(Server, alias="Desktop", api_url="http://x:1", is_online=True)


def test_an_any_job_runs_only_where_its_vae_is(online, desktop):
    cache_vae(desktop, "sdxl_vae.safetensors")
    (job,) = queue(None, requirement_keys=["file:sdxl_vae"])

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert dispatch.job_claim_next(server_id=desktop.pk).job_id == job.pk


def test_an_any_job_needs_its_loras_and_its_requirements_on_one_server(online, desktop):
    cache_loras(online, "ink")
    cache_script(online, "adetailer")
    cache_loras(desktop, "ink")
    (job,) = queue(None, lora_keys=["ink"], requirement_keys=["script:txt2img:adetailer"])

    assert dispatch.job_claim_next(server_id=desktop.pk) is None
    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_an_any_img2img_job_runs_only_where_its_script_is_for_img2img(online, mode):
    txt_only = baker.make(Server, alias="TxtOnly", api_url="http://x:2", is_online=True)
    both = baker.make(Server, alias="Both", api_url="http://x:3", is_online=True)
    cache_script(txt_only, "x/y/z plot")
    cache_script(both, "x/y/z plot", modes=("txt2img", "img2img"))
    params = {"mode": mode, "script_name": "X/Y/Z plot", "script_args": []}
    (job,) = queue(None, requirement_keys=job_requirement_keys(params))

    assert dispatch.job_claim_next(server_id=txt_only.pk) is None
    assert dispatch.job_claim_next(server_id=both.pk).job_id == job.pk


def test_an_any_txt2img_job_runs_where_its_script_is_for_txt2img(online):
    txt_only = baker.make(Server, alias="TxtOnly", api_url="http://x:2", is_online=True)
    cache_script(txt_only, "x/y/z plot")
    cache_script(online, "x/y/z plot", modes=("img2img",))
    (job,) = queue(None, requirement_keys=job_requirement_keys({"script_name": "x/y/z plot"}))

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert dispatch.job_claim_next(server_id=txt_only.pk).job_id == job.pk


def test_a_forge_module_satisfies_a_vae_requirement(online, desktop):
    rows = file_rows(ModelKind.MODULE, [{"model_name": "ae.safetensors", "filename": "/m/ae"}])
    CachedModel.objects.create(server=desktop, **rows[0].fields())
    (job,) = queue(None, requirement_keys=["file:ae"])

    assert dispatch.job_claim_next(server_id=online.pk) is None
    assert dispatch.job_claim_next(server_id=desktop.pk).job_id == job.pk


def test_an_any_job_whose_requirement_no_server_has_is_claimed_to_fail_with_the_reason(
    online, desktop
):
    (job,) = queue(None, requirement_keys=["script:txt2img:regional prompter"])

    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_a_servers_own_job_is_claimed_whatever_its_requirements(online):
    (job,) = queue(online, requirement_keys=["file:not_cached"])

    assert dispatch.job_claim_next(server_id=online.pk).job_id == job.pk


def test_the_claim_with_requirements_reads_each_head_in_index_order(deep_queue):
    online, other = deep_queue
    cache_vae(other, "sdxl_vae.safetensors")
    any_jobs = Job.objects.filter(server__isnull=True).values_list("pk", flat=True)[:500]
    Job.objects.filter(pk__in=list(any_jobs)).update(requirement_keys=["file:sdxl_vae"])
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")
    sql = dispatch._sql(dispatch._QUEUE_HEAD, row_lock=dispatch._FOR_UPDATE_SKIP_LOCKED)
    params = {**dispatch._queue_head_params(online, timezone.now()), "lookahead": 8}

    assert_read_in_index_order(explained(sql, params), HEADS)
