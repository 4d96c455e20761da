"""Which Celery process a heartbeat is of (a worker, or beat: beat writes one too), and a
worker's threads."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core_app', '0004_user_quota'),
    ]

    operations = [
        migrations.AddField(
            model_name='workerheartbeat',
            name='process',
            field=models.CharField(choices=[('worker', 'worker'), ('beat', 'beat')], default='worker', editable=False, max_length=10),
        ),
        migrations.AddField(
            model_name='workerheartbeat',
            name='threads',
            field=models.PositiveIntegerField(blank=True, editable=False, help_text="A worker's threads (its concurrency).", null=True),
        ),
    ]
