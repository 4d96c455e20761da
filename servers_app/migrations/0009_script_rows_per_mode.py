"""A cached script becomes one row per mode, its requirement_key naming the mode
(`script:<mode>:<name>`, servers_app.extension_cache.script_rows): the claim matches an
"any" job's script by mode, so that a server with the script for the other mode only does
not take the job. Rows as 0008 wrote them (`script:<name>`, relative path = title) are
split by their metadata's modes (both when none is listed)."""

from django.db import migrations

MODES = ("txt2img", "img2img")


def split_script_rows(apps, schema_editor):
    CachedModel = apps.get_model("servers_app", "CachedModel")
    for row in list(CachedModel.objects.filter(kind="script")):
        if row.requirement_key.startswith(("script:txt2img:", "script:img2img:")):
            continue
        listed = (row.metadata or {}).get("modes") or []
        modes = [mode for mode in MODES if mode in listed] or list(MODES)
        title = row.title
        for index, mode in enumerate(modes):
            if index:
                row.pk = None
                row._state.adding = True
            row.name = f"{title} ({mode})"
            row.relative_path = f"{mode}:{title}"
            row.requirement_key = f"script:{mode}:{title.strip().casefold()}"
            row.save()


def join_script_rows(apps, schema_editor):
    CachedModel = apps.get_model("servers_app", "CachedModel")
    seen: set[tuple[int, str]] = set()
    for row in CachedModel.objects.filter(kind="script").order_by("server_id", "relative_path"):
        if (row.server_id, row.title) in seen:
            row.delete()
            continue
        seen.add((row.server_id, row.title))
        row.name = row.relative_path = row.title
        row.requirement_key = f"script:{row.title.strip().casefold()}"
        row.save()


class Migration(migrations.Migration):
    dependencies = [
        ("servers_app", "0008_extension_lists"),
    ]

    operations = [
        migrations.RunPython(split_script_rows, join_script_rows),
    ]
