"""An active job's script requirements name its mode (`script:<name>` becomes
`script:txt2img:<name>` or `script:img2img:<name>`, as queue_app.extension_checks
job_requirement_keys now spells them and servers_app 0009 the cache rows): without it a
waiting "any" job would match no server's script rows."""

from django.db import migrations

ACTIVE = ("pending", "processing")
PREFIXES = ("script:txt2img:", "script:img2img:")


def job_mode(params) -> str:
    mode = params.get("mode") if isinstance(params, dict) else None
    mode = mode.strip() if isinstance(mode, str) else ""
    return "img2img" if mode in ("img2img", "inpaint") else "txt2img"


def _with_mode(key: str, mode: str) -> str:
    if key.startswith("script:") and not key.startswith(PREFIXES):
        return f"script:{mode}:{key[len('script:') :]}"
    return key


def _without_mode(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return "script:" + key[len(prefix) :]
    return key


def _rewrite(apps, change) -> None:
    Job = apps.get_model("queue_app", "Job")
    jobs = Job.objects.filter(status__in=ACTIVE).only("generation_params", "requirement_keys")
    for job in jobs.iterator():
        keys = list(job.requirement_keys or [])
        new = sorted({change(key, job_mode(job.generation_params)) for key in keys})
        if new != sorted(keys):
            job.requirement_keys = new
            job.save(update_fields=["requirement_keys"])


def add_modes(apps, schema_editor):
    _rewrite(apps, _with_mode)


def drop_modes(apps, schema_editor):
    _rewrite(apps, lambda key, mode: _without_mode(key))


class Migration(migrations.Migration):
    dependencies = [
        ("queue_app", "0015_job_callback_url"),
    ]

    operations = [
        migrations.RunPython(add_modes, drop_modes),
    ]
