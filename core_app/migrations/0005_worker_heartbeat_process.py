"""Which Celery process a heartbeat is of: a worker, or beat (since beat writes one too)."""

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
    ]
