"""Every download belongs to a user. Downloads made before users existed were started by
keys that could do everything (admin keys of the oldest superuser since core_app 0003): they
go to the oldest active superuser, or to the local user MOBILESD_ANONYMOUS_USER (created
here) if there is none."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def give_existing_downloads_an_owner(apps, schema_editor):
    Download = apps.get_model("civitai_app", "Download")
    if not Download.objects.exists():
        return
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        user, _ = User.objects.get_or_create(
            username=settings.MOBILESD_ANONYMOUS_USER, defaults={"password": "!"}
        )
    Download.objects.update(owner=user)


class Migration(migrations.Migration):
    dependencies = [
        ("civitai_app", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="download",
            name="owner",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="civitai_downloads",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(give_existing_downloads_an_owner, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="download",
            name="owner",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="civitai_downloads",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
