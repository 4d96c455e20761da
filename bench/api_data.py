"""The history of the API benchmark (bench/api.py): a year of finished jobs, a queue of
pending ones, written by PostgreSQL itself.

`fill` writes, in one transaction: `servers` servers and `owners` API keys (through the
ORM), `jobs` finished jobs (completed 85 %, failed 8 %, cancelled 7 %; one `INSERT ...
SELECT generate_series`), one or two JobImage rows per completed job (a second INSERT
reading the names back from each job's `result_details.images`, so the two agree; no
files), `pending` pending jobs (half pinned to a server, half for "any") created in the
last day, one processing job per server, and `downloads` finished Civitai downloads. Then
VACUUM ANALYZE (what autovacuum would have done to a year-old table; done now so that it
does not run during the measurement) and a CHECKPOINT (the same for the dirty pages).

Rows look like the engine's: `generation_params` as the phone sends them, `result_details`
as `queue_app.dispatch.job_complete` / `job_fail` / `job_cancel` write them, with a Forge
`generation_info` (prompts, seeds, infotexts): about 2 KB of JSON per completed job.
created_at is spread evenly over the year before the pending jobs (the table's physical
order is its creation order, as it would be); servers are used unevenly (the first ones
more); the jobs are shared by `owners` users (each with a client key) and, one share
more, the local user (no key).

The fill bypasses the services and, for speed, the job counts' triggers
(queue_app.counts): they are dropped before the rows are written and installed again,
with a recount of every key, in `after_fill`, all in the fill's transaction.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench.engine_harness import log

COMPLETED_SHARE = 0.85
FAILED_SHARE = 0.08  # the rest (7 %) cancelled
YEAR = timedelta(days=365)
PENDING_WINDOW = timedelta(days=1)

CHECKPOINTS = (
    "Pony/cyberrealisticPony_v85.safetensors",
    "SDXL/juggernautXL_v9Rundiffusionphoto2.safetensors",
    "SDXL/sd_xl_base_1.0.safetensors",
    "Flux/flux1-dev-bnb-nf4-v2.safetensors",
    "SD15/realisticVisionV60B1_v51HyperVAE.safetensors",
    "Illustrious/waiNSFWIllustrious_v110.safetensors",
)
PROMPTS = (
    "a beautiful landscape at golden hour, mountains, lake reflection, volumetric light, "
    "highly detailed, 8k, sharp focus, masterpiece",
    "portrait of an old fisherman, weathered skin, dramatic rim lighting, shallow depth of "
    "field, 85mm, film grain, photorealistic",
    "cyberpunk city street at night, neon signs, rain, reflections on wet asphalt, crowded, "
    "cinematic composition, wide angle",
    "a cozy reading nook with a cat sleeping on a pile of books, warm lamp light, watercolor, "
    "soft pastel palette",
    "score_9, score_8_up, score_7_up, 1girl, solo, silver hair, long coat, standing in a "
    "snowy forest, looking at viewer, detailed eyes",
    "macro photograph of a dew-covered spider web at dawn, bokeh, ultra detailed, "
    "nature photography",
    "isometric diorama of a tiny medieval village, clay render, soft shadows, tilt-shift",
    "an astronaut riding a horse on mars, dust storm, epic scale, concept art, trending on "
    "artstation",
)
NEGATIVE = "ugly, blurry, low quality, worst quality, deformed hands, extra fingers, watermark"
SAMPLERS = ("Euler a", "DPM++ 2M", "DPM++ SDE", "Euler", "DPM++ 2M SDE")
SIZES = ((512, 512), (832, 1216), (1024, 1024), (1216, 832), (768, 1344))
FORGE_VERSION = "f2.0.1v1.10.1-previous-635-gb86e1f5f"
ERRORS = (
    ("Server gpu returned HTTP 500: CUDA out of memory. Tried to allocate 2.50 GiB", None),
    ("The server did not answer within 600 seconds.", None),
    ("Gave up after 4 attempts. Last error: connection refused", None),
    ("The server generated with another checkpoint than the one resolved.", "checkpoint_mismatch"),
    ("LoRA 'detail_tweaker' is not on the server. Close matches: add_detail", "lora_not_found"),
)

# One finished job per row of generate_series. Random draws first, in a materialized CTE
# (each volatile value is drawn once and read several times), then what they imply, then
# the row. Values bound by name; table names from the models.
_FINISHED_SQL = """
WITH draw AS MATERIALIZED (
    SELECT g,
           gen_random_uuid() AS id,
           random() AS r_status, random() AS r_server, random() AS r_owner,
           random() AS r_wait, random() AS r_run,
           1 + floor(random() * %(checkpoint_count)s)::int AS ckpt,
           1 + floor(random() * %(prompt_count)s)::int AS prompt_i,
           1 + floor(random() * %(sampler_count)s)::int AS sampler_i,
           1 + floor(random() * %(size_count)s)::int AS size_i,
           CASE WHEN random() < 0.7 THEN 1 ELSE 2 END AS n_images,
           20 + 5 * floor(random() * 5)::int AS steps,
           floor(random() * 4294967294)::bigint AS seed,
           %(start)s::timestamptz
               + make_interval(secs => (g - 1) * %(span_seconds)s / %(count)s) AS created
    FROM generate_series(1, %(count)s) AS g
),
job AS (
    SELECT d.*,
           CASE WHEN d.r_status < %(completed_share)s THEN 'completed'
                WHEN d.r_status < %(completed_share)s + %(failed_share)s THEN 'failed'
                ELSE 'cancelled' END AS status,
           (%(server_ids)s::bigint[])[1 + floor(d.r_server ^ 2 * %(server_count)s)::int]
               AS server_id,
           (%(server_aliases)s::text[])[1 + floor(d.r_server ^ 2 * %(server_count)s)::int]
               AS alias,
           (%(key_ids)s::bigint[])[1 + floor(d.r_owner * %(owner_slots)s)::int] AS api_key_id,
           (%(user_ids)s::bigint[])[1 + floor(d.r_owner * %(owner_slots)s)::int] AS owner_id,
           (%(checkpoints)s::text[])[d.ckpt] AS checkpoint,
           (%(checkpoint_keys)s::text[])[d.ckpt] AS checkpoint_key,
           (%(prompts)s::text[])[d.prompt_i] || ', variation ' || d.g AS prompt,
           (%(samplers)s::text[])[d.sampler_i] AS sampler,
           (%(widths)s::int[])[d.size_i] AS width,
           (%(heights)s::int[])[d.size_i] AS height,
           d.created + make_interval(secs => d.r_wait * 90) AS started,
           substr(md5(d.ckpt::text), 1, 10) AS model_hash
    FROM draw d
),
timed AS (
    SELECT j.*,
           CASE j.status
               WHEN 'completed' THEN j.started + make_interval(secs => 4 + j.r_run * 60)
               WHEN 'failed' THEN j.started + make_interval(secs => j.r_run * 20)
               ELSE j.created + make_interval(secs => j.r_wait * 300) END AS finished,
           j.prompt || E'\\nNegative prompt: ' || %(negative)s
               || E'\\nSteps: ' || j.steps || ', Sampler: ' || j.sampler
               || ', Schedule type: Karras, CFG scale: 7, Seed: ' AS info_head,
           ', Size: ' || j.width || 'x' || j.height || ', Model hash: ' || j.model_hash
               || ', Model: ' || split_part(split_part(j.checkpoint, '/', 2), '.', 1)
               || ', Version: ' || %(forge_version)s AS info_tail
    FROM job j
),
named AS (
    SELECT t.*,
           {images} AS images,
           {seeds} AS seeds,
           {infotexts} AS infotexts,
           {prompts} AS prompts,
           {negatives} AS negatives
    FROM timed t
)
INSERT INTO {job} (
    id, status, server_id, target_server_alias, generation_params, result_details,
    forge_session_hash, retry_count, priority, checkpoint_key, lora_keys, requirement_keys,
    passed_over,
    progress, lease_token, lease_expires_at, started_at, next_attempt_at, created_at,
    updated_at, completed_at, idempotency_key, api_key_id, owner_id, turn, callback_url
)
SELECT n.id, n.status, n.server_id, n.alias,
       jsonb_build_object(
           'positive_prompt', n.prompt, 'negative_prompt', %(negative)s,
           'checkpoint_name', n.checkpoint, 'width', n.width, 'height', n.height,
           'steps', n.steps, 'cfg_scale', 7, 'sampler_name', n.sampler,
           'scheduler_or_quality_preset', 'Balanced', 'restore_faces', false,
           'seed', n.seed, 'subseed', '', 'num_images', n.n_images,
           'enable_hires_fix', false, 'upscaler_model', 'None', 'refiner_model', 'None',
           'style_preset', 'simple', 'sampling_category', 'Both'
       ),
       CASE n.status
           WHEN 'completed' THEN jsonb_build_object(
               'images', n.images,
               'info', 'Job completed and images downloaded by MobileSD backend.',
               'checkpoint', n.checkpoint || ' [' || n.model_hash || ']',
               'generation_info', jsonb_build_object(
                   'prompt', n.prompt, 'all_prompts', n.prompts,
                   'negative_prompt', %(negative)s, 'all_negative_prompts', n.negatives,
                   'seed', n.seed, 'all_seeds', n.seeds, 'subseed', n.seed + 7,
                   'all_subseeds', n.seeds, 'subseed_strength', 0,
                   'width', n.width, 'height', n.height, 'sampler_name', n.sampler,
                   'cfg_scale', 7, 'steps', n.steps, 'batch_size', n.n_images,
                   'restore_faces', false, 'face_restoration_model', null,
                   'sd_model_name', split_part(split_part(n.checkpoint, '/', 2), '.', 1),
                   'sd_model_hash', n.model_hash, 'sd_vae_name', null, 'sd_vae_hash', null,
                   'seed_resize_from_w', -1, 'seed_resize_from_h', -1,
                   'denoising_strength', null,
                   'extra_generation_params', jsonb_build_object('Schedule type', 'Karras'),
                   'index_of_first_image', 0, 'infotexts', n.infotexts, 'styles', '[]'::jsonb,
                   'job_timestamp', to_char(n.started AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS'),
                   'clip_skip', 1, 'is_using_inpainting_conditioning', false,
                   'version', %(forge_version)s
               )
           )
           WHEN 'failed' THEN jsonb_strip_nulls(jsonb_build_object(
               'error', (%(errors)s::text[])[1 + n.g %% %(error_count)s],
               'code', (%(error_codes)s::text[])[1 + n.g %% %(error_count)s]
           ))
           ELSE jsonb_build_object('cancelled', true, 'message', 'Job cancelled by user')
       END,
       CASE WHEN n.status = 'cancelled' THEN NULL ELSE n.id::text END,
       CASE WHEN n.status = 'failed' AND n.g %% 3 = 0 THEN 1 ELSE 0 END,
       0, n.checkpoint_key, '[]'::jsonb, '[]'::jsonb, 0,
       CASE WHEN n.status = 'completed'
            THEN '{{"fraction": 1.0, "textinfo": "Done"}}'::jsonb END,
       NULL, NULL,
       CASE WHEN n.status = 'cancelled' THEN NULL ELSE n.started END,
       NULL, n.created, n.finished, n.finished, NULL, n.api_key_id, n.owner_id, 0, ''
FROM named n
"""


def _per_image(expression: str) -> str:
    """A JSON array of `expression` for each image of a job (1 or 2; `{i}` is the index)."""
    one = expression.format(i=0)
    two = expression.format(i=1)
    return (
        f"CASE WHEN t.n_images = 1 THEN jsonb_build_array({one}) "
        f"ELSE jsonb_build_array({one}, {two}) END"
    )


_FINISHED_FRAGMENTS = {
    "images": _per_image(
        "left(replace(t.id::text, '-', ''), 8) || '_' "
        "|| floor(extract(epoch FROM t.finished) * 1000)::bigint || '_' "
        "|| lpad('{i}', 5, '0') || '-' || (t.seed + {i}) || '.png'"
    ),
    "seeds": _per_image("t.seed + {i}"),
    "infotexts": _per_image("t.info_head || (t.seed + {i}) || t.info_tail"),
    "prompts": _per_image("t.prompt"),
    "negatives": _per_image("%(negative)s::text"),
}

# The images of every completed job, as its result_details names them.
_IMAGES_SQL = """
INSERT INTO {image} (job_id, index, file, seed, width, height, infotext, created_at)
SELECT j.id, im.ord - 1,
       'jobs/' || left(replace(j.id::text, '-', ''), 2) || '/' || im.name,
       (j.result_details -> 'generation_info' -> 'all_seeds' ->> (im.ord - 1)::int)::bigint,
       (j.generation_params ->> 'width')::int, (j.generation_params ->> 'height')::int,
       j.result_details -> 'generation_info' -> 'infotexts' ->> (im.ord - 1)::int,
       j.completed_at
FROM {job} j
CROSS JOIN LATERAL jsonb_array_elements_text(j.result_details -> 'images')
    WITH ORDINALITY AS im(name, ord)
WHERE j.status = 'completed'
"""

# The queue: pending jobs created over the last day, oldest first in the physical order.
_PENDING_SQL = """
WITH draw AS MATERIALIZED (
    SELECT g, gen_random_uuid() AS id, random() AS r_server,
           1 + floor(random() * %(checkpoint_count)s)::int AS ckpt,
           1 + floor(random() * %(prompt_count)s)::int AS prompt_i,
           %(start)s::timestamptz
               + make_interval(secs => (g - 1) * %(span_seconds)s / %(count)s) AS created
    FROM generate_series(1, %(count)s) AS g
)
INSERT INTO {job} (
    id, status, server_id, target_server_alias, generation_params, result_details,
    forge_session_hash, retry_count, priority, checkpoint_key, lora_keys, requirement_keys,
    passed_over,
    progress, lease_token, lease_expires_at, started_at, next_attempt_at, created_at,
    updated_at, completed_at, idempotency_key, api_key_id, owner_id, turn, callback_url
)
SELECT d.id, 'pending',
       CASE WHEN d.g %% 2 = 0
            THEN (%(server_ids)s::bigint[])[1 + floor(d.r_server * %(server_count)s)::int] END,
       CASE WHEN d.g %% 2 = 0
            THEN (%(server_aliases)s::text[])[1 + floor(d.r_server * %(server_count)s)::int]
            ELSE 'any' END,
       jsonb_build_object(
           'positive_prompt', (%(prompts)s::text[])[d.prompt_i] || ', queued ' || d.g,
           'negative_prompt', %(negative)s, 'checkpoint_name', (%(checkpoints)s::text[])[d.ckpt],
           'width', 1024, 'height', 1024, 'steps', 25, 'cfg_scale', 7,
           'sampler_name', 'DPM++ 2M', 'seed', '', 'num_images', 1
       ),
       NULL, NULL, 0, 0, (%(checkpoint_keys)s::text[])[d.ckpt], '[]'::jsonb, '[]'::jsonb, 0,
       NULL, NULL, NULL, NULL, NULL, d.created, d.created, NULL, NULL,
       (%(key_ids)s::bigint[])[1 + d.g %% %(owner_slots)s],
       (%(user_ids)s::bigint[])[1 + d.g %% %(owner_slots)s],
       -- each owner's jobs take its turns in order (queue_app.turns)
       d.g / %(owner_slots)s,
       ''
FROM draw d
"""


def _tables() -> dict[str, str]:
    from django.db import connection

    from queue_app.models import Job, JobImage

    quote = connection.ops.quote_name
    return {"job": quote(Job._meta.db_table), "image": quote(JobImage._meta.db_table)}


def fill(*, jobs: int, pending: int, servers: int, owners: int, downloads: int) -> dict[str, float]:
    """Write the history (see the module's docstring); returns seconds per step."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from core_app.scopes import local_user
    from core_app.services import api_key_create
    from events_app.sequencer import events_sequence
    from servers_app.checkpoints import checkpoint_key
    from servers_app.models import Server

    seconds: dict[str, float] = {}
    tables = _tables()
    now = timezone.now()
    history_start = now - PENDING_WINDOW - YEAR
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        # This transaction only: a big sort in memory, no wait for the WAL at commit.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SET LOCAL synchronous_commit = off")
        before_fill()
        rows = [
            Server.objects.create(alias=f"gpu{i}", api_url=f"http://192.0.2.{i + 1}:7860", slots=1)
            for i in range(servers)
        ]
        Server.objects.update(is_online=True, last_checked_at=now, last_seen_at=now)
        # Each owner a user with a client key; the keyless share is the local user's (jobs
        # submitted in anonymous mode).
        keys = [
            api_key_create(name=f"bench owner {i}", user=user)[0]
            for i in range(owners)
            for user in [get_user_model().objects.create(username=f"bench-owner-{i}")]
        ]
        common: dict[str, Any] = {
            "server_ids": [row.pk for row in rows],
            "server_aliases": [row.alias for row in rows],
            "server_count": len(rows),
            "key_ids": [*(key.pk for key in keys), None],
            "user_ids": [*(key.user_id for key in keys), local_user().pk],
            "owner_slots": len(keys) + 1,
            "checkpoints": list(CHECKPOINTS),
            "checkpoint_keys": [checkpoint_key(name) for name in CHECKPOINTS],
            "checkpoint_count": len(CHECKPOINTS),
            "prompts": list(PROMPTS),
            "prompt_count": len(PROMPTS),
            "negative": NEGATIVE,
        }
        if jobs:
            log(f"fill: {jobs:,} finished jobs")
            cursor.execute(
                _FINISHED_SQL.format(**tables, **_FINISHED_FRAGMENTS),
                {
                    **common,
                    "count": jobs,
                    "start": history_start,
                    "span_seconds": YEAR.total_seconds(),
                    "completed_share": COMPLETED_SHARE,
                    "failed_share": FAILED_SHARE,
                    "samplers": list(SAMPLERS),
                    "sampler_count": len(SAMPLERS),
                    "widths": [w for w, _ in SIZES],
                    "heights": [h for _, h in SIZES],
                    "size_count": len(SIZES),
                    "forge_version": FORGE_VERSION,
                    "errors": [text for text, _ in ERRORS],
                    "error_codes": [code for _, code in ERRORS],
                    "error_count": len(ERRORS),
                },
            )
            seconds["finished_jobs"] = round(time.monotonic() - started, 1)
            mark = time.monotonic()
            log("fill: their images")
            cursor.execute(_IMAGES_SQL.format(**tables))
            seconds["images"] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()
        if pending:
            log(f"fill: {pending:,} pending jobs")
            cursor.execute(
                _PENDING_SQL.format(**tables),
                {
                    **common,
                    "count": pending,
                    "start": now - PENDING_WINDOW,
                    "span_seconds": PENDING_WINDOW.total_seconds() - 60,
                },
            )
        _add_processing(rows, now)
        _add_downloads(downloads, history_start)
        after_fill()
        seconds["pending_and_others"] = round(time.monotonic() - mark, 1)
    mark = time.monotonic()
    # The fill's rows made their events (the triggers'); numbered now, as the sequencer
    # would have numbered them as they came, not by the first request after the ANALYZE:
    # its statistics would say every event is unnumbered, and the lists' reads of the
    # event log's head would scan the log (autovacuum, off on CI's PostgreSQL, would have
    # analyzed the table again).
    log(f"fill: {events_sequence():,} events numbered")
    log("fill: VACUUM ANALYZE, CHECKPOINT")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")
    seconds["vacuum_analyze"] = round(time.monotonic() - mark, 1)
    seconds["total"] = round(time.monotonic() - started, 1)
    return seconds


def _add_processing(servers: list[Any], now: Any) -> None:
    """One job running on each server, as on a busy day."""
    import uuid

    from core_app.scopes import local_user
    from queue_app.models import Job, JobStatus

    owner = local_user()
    Job.objects.bulk_create(
        Job(
            server=server,
            target_server_alias=server.alias,
            generation_params={
                "positive_prompt": f"{PROMPTS[0]}, running",
                "checkpoint_name": CHECKPOINTS[0],
                "width": 1024,
                "height": 1024,
                "steps": 25,
            },
            status=JobStatus.PROCESSING,
            forge_session_hash=str(uuid.uuid4()),
            lease_token=uuid.uuid4(),
            lease_expires_at=now + timedelta(minutes=10),
            started_at=now - timedelta(seconds=10),
            progress={"fraction": 0.4, "eta_seconds": 15.0, "step": 10, "total_steps": 25},
            owner=owner,
        )
        for server in servers
    )


def _add_downloads(count: int, since: Any) -> None:
    """Finished Civitai downloads (a download list's worth)."""
    from civitai_app.models import Download, DownloadStatus
    from core_app.scopes import local_user

    statuses = (DownloadStatus.COMPLETED,) * 8 + (DownloadStatus.FAILED, DownloadStatus.CANCELLED)
    owner = local_user()
    Download.objects.bulk_create(
        Download(
            status=statuses[i % len(statuses)],
            model_version_id=100_000 + i,
            model_id=50_000 + i,
            model_name=f"Model {i}",
            version_name="v1.0",
            model_type="LORA" if i % 3 else "Checkpoint",
            file_type="Model",
            base_model="SDXL 1.0",
            file_id=200_000 + i,
            source_file_name=f"model_{i}.safetensors",
            file_name=f"model_{i}.safetensors",
            folder="Lora" if i % 3 else "Stable-diffusion",
            download_url=f"https://civitai.com/api/download/models/{100_000 + i}",
            sha256=f"{i:064x}",
            size_bytes=200 * 1024 * 1024,
            bytes_done=200 * 1024 * 1024 if i % 10 < 8 else 0,
            finished_at=since + timedelta(days=i % 365),
            owner=owner,
        )
        for i in range(count)
    )


def before_fill() -> None:
    """No count row per job written: the counts are recounted once in `after_fill`."""
    from queue_app.counts import job_counts_drop

    job_counts_drop()


def after_fill() -> None:
    """What the services keep beside the jobs, rebuilt from the rows the fill wrote (inside
    the fill's transaction): the job counts' triggers and a recount of them."""
    from queue_app.counts import job_counts_install

    job_counts_install(force=True)


def counts() -> dict[str, int]:
    """Rows of the benchmark's history as they are now (what `--reuse` compares)."""
    from django.db.models import Count

    from civitai_app.models import Download
    from queue_app.models import FINISHED_STATUSES, Job, JobStatus
    from servers_app.models import Server

    by_status = {
        row["status"]: row["n"]
        for row in Job.objects.order_by().values("status").annotate(n=Count("id"))
    }
    return {
        "finished": sum(by_status.get(status, 0) for status in FINISHED_STATUSES),
        "pending": by_status.get(JobStatus.PENDING, 0),
        "processing": by_status.get(JobStatus.PROCESSING, 0),
        "servers": Server.objects.count(),
        "downloads": Download.objects.count(),
    }


def expected_counts(*, jobs: int, pending: int, servers: int, downloads: int) -> dict[str, int]:
    return {
        "finished": jobs,
        "pending": pending,
        "processing": servers,
        "servers": servers,
        "downloads": downloads,
    }


def completed_job_with_images() -> str:
    """A completed job with two images from the middle of the history: the row of the
    status read and of the floor."""
    from django.db.models import Count

    from queue_app.models import Job, JobImage, JobStatus

    jobs = Job.objects.filter(status=JobStatus.COMPLETED).order_by("created_at")
    middle = jobs.count() // 2
    ids = list(jobs.values_list("pk", flat=True)[middle : middle + 50])
    with_most = (
        JobImage.objects.filter(job_id__in=ids)
        .values("job_id")
        .annotate(n=Count("id"))
        .order_by("-n", "job_id")
        .first()
    )
    if with_most is None:
        raise SystemExit("The history has no completed job with images.")
    return str(with_most["job_id"])
