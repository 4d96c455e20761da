"""Every API key belongs to a user and has a scope. Keys made before users existed could do
everything: they become admin keys of the oldest superuser, or of the user named by
MOBILESD_ANONYMOUS_USER ("local"), created here, if there is no superuser."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def give_existing_keys_an_admin_user(apps, schema_editor):
    ApiKey = apps.get_model("core_app", "ApiKey")
    if not ApiKey.objects.exists():
        return
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        user, _ = User.objects.get_or_create(
            username=settings.MOBILESD_ANONYMOUS_USER, defaults={"password": "!"}
        )
    ApiKey.objects.update(user=user, scope="admin")


class Migration(migrations.Migration):
    dependencies = [
        ("core_app", "0002_worker_heartbeat"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scope",
            field=models.CharField(
                choices=[("client", "Client"), ("admin", "Admin")], default="client", max_length=16
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="user",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="api_keys",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(give_existing_keys_an_admin_user, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apikey",
            name="user",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="api_keys",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
