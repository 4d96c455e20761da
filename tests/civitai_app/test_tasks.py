"""The Celery tasks of downloads: what each one enqueues."""

from civitai_app import tasks
from tests.civitai_app.support import queue, reload, run


def test_the_reconcile_task_nudges_one_worker_per_free_slot(civitai, laptop, settings, published):
    settings.MOBILESD_MAX_CONCURRENT_DOWNLOADS = 2
    for version in (100, 200, 900):
        queue(version)

    tasks.reconcile_downloads()

    assert [name for name, _, _ in published] == ["civitai_app.tasks.run_downloads"] * 2


def test_a_completed_download_enqueues_the_rescan_after_commit(
    civitai, laptop, published, django_capture_on_commit_callbacks
):
    download = queue(200)

    with django_capture_on_commit_callbacks() as callbacks:
        run()
    assert published == []  # nothing before the commit

    for callback in callbacks:
        callback()
    assert published == [("civitai_app.tasks.refresh_after_download", (str(download.pk),), {})]


def test_a_failed_download_enqueues_no_rescan(
    civitai, laptop, published, django_capture_on_commit_callbacks
):
    civitai.faults.corrupt_transfer = True
    download = queue(200)

    with django_capture_on_commit_callbacks(execute=True):
        run()

    assert reload(download).status == "failed"
    assert published == []
