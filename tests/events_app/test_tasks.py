"""The event log's upkeep: the beat schedule prunes it with the task, which keeps what is
younger than MOBILESD_EVENTS_RETENTION_SECONDS."""

from datetime import timedelta

from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from model_bakery import baker

from events_app import tasks
from events_app.models import Event
from events_app.selectors import events_pruned_through
from events_app.sequencer import events_sequence
from mobilesd.celery import app
from servers_app.models import Server


def test_beat_prunes_the_events_periodically_with_the_registered_task():
    entry = settings.CELERY_BEAT_SCHEDULE["prune-events"]

    assert entry["task"] == "events_app.tasks.prune_events"
    assert entry["schedule"] == settings.MOBILESD_EVENTS_PRUNE_SECONDS
    assert app.tasks[entry["task"]].run is tasks.prune_events.run


@override_settings(MOBILESD_EVENTS_RETENTION_SECONDS=3600.0)
def test_the_prune_task_deletes_the_events_older_than_the_retention_and_keeps_the_others(db):
    for alias in ("old", "older", "young", "new"):
        baker.make(Server, alias=alias, api_url=f"http://{alias}:7860")
    events_sequence()
    now = timezone.now()
    ages = {"older": 7200, "old": 3660, "young": 3540, "new": 0}  # seconds
    seqs = {}
    for event in Event.objects.all():
        alias = event.data["alias"]
        seqs[alias] = event.seq
        Event.objects.filter(pk=event.pk).update(created_at=now - timedelta(seconds=ages[alias]))

    deleted = tasks.prune_events()

    kept = sorted(Event.objects.values_list("data__alias", flat=True))
    assert (deleted, kept) == (2, ["new", "young"])
    assert events_pruned_through() == seqs["older"]
