from django.db import migrations, models


def install_event_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        return  # installed after the whole migrate (events_app.apps: post_migrate)
    from events_app.triggers import event_triggers_install

    event_triggers_install(force=True)


def drop_event_triggers(apps, schema_editor):
    from events_app.triggers import event_triggers_drop

    event_triggers_drop()


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("civitai_app", "0002_download_owner"),
        ("queue_app", "0010_job_completed_checkpoint_index"),
        ("servers_app", "0007_server_performance"),
    ]

    operations = [
        migrations.CreateModel(
            name="Event",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField(blank=True, editable=False, null=True, unique=True)),
                ("type", models.CharField(editable=False, max_length=40)),
                ("job_id", models.UUIDField(blank=True, editable=False, null=True)),
                ("batch_id", models.UUIDField(blank=True, editable=False, null=True)),
                ("server_id", models.BigIntegerField(blank=True, editable=False, null=True)),
                ("download_id", models.UUIDField(blank=True, editable=False, null=True)),
                ("owner_id", models.BigIntegerField(blank=True, editable=False, null=True)),
                ("data", models.JSONField(default=dict, editable=False)),
                ("created_at", models.DateTimeField(editable=False)),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("seq__isnull", True)),
                        fields=["id"],
                        name="event_unsequenced",
                    ),
                    models.Index(fields=["owner_id", "seq"], name="event_owner_seq"),
                    models.Index(fields=["job_id", "seq"], name="event_job_seq"),
                    models.Index(fields=["batch_id", "seq"], name="event_batch_seq"),
                    models.Index(fields=["created_at"], name="event_created"),
                ],
            },
        ),
        migrations.CreateModel(
            name="EventLog",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(
                        default=1, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("pruned_through", models.BigIntegerField(default=0, editable=False)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="eventlog_singleton")
                ],
            },
        ),
        # The triggers that write the log (events_app/triggers.py; post_migrate installs
        # them again if SQLite lost them).
        migrations.RunPython(install_event_triggers, drop_event_triggers, elidable=False),
    ]
