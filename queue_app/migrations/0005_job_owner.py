"""Every job belongs to a user: the user of the key that submitted it (see core_app 0003),
else the local user of anonymous mode (MOBILESD_ANONYMOUS_USER, created if needed)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def give_existing_jobs_their_owner(apps, schema_editor):
    Job = apps.get_model("queue_app", "Job")
    ApiKey = apps.get_model("core_app", "ApiKey")
    Job.objects.filter(api_key__isnull=False).update(
        owner=Subquery(ApiKey.objects.filter(pk=OuterRef("api_key")).values("user")[:1])
    )
    if Job.objects.filter(owner__isnull=True).exists():
        User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
        local, _ = User.objects.get_or_create(
            username=settings.MOBILESD_ANONYMOUS_USER, defaults={"password": "!"}
        )
        Job.objects.filter(owner__isnull=True).update(owner=local)


class Migration(migrations.Migration):
    dependencies = [
        ("queue_app", "0004_job_pending_heads"),
        ("core_app", "0003_apikey_user_scope"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="owner",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="jobs",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(give_existing_jobs_their_owner, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="job",
            name="owner",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="jobs",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
