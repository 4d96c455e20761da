"""The Celery tasks of downloads: what each one enqueues."""

from civitai_app import tasks
from tests.civitai_app.support import queue


def test_the_reconcile_task_nudges_one_worker_per_free_slot(civitai, laptop, settings, published):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900):
        queue(version)

    tasks.reconcile_downloads()

    assert [name for name, _, _ in published] == ["civitai_app.tasks.run_downloads"] * 2
