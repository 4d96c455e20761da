"""The event log: every change of a job, batch, server, download or the queue's switches,
recorded by database triggers in the transaction that made it (events_app.triggers)."""

from django.db import models


class Event(models.Model):
    """One change. `seq` is its public id: it only grows, and an event becomes visible to
    readers only once it has one (events_app.sequencer), so that a reader that has seen
    `seq` N never later finds an event below N. `id` is the order the triggers wrote them.

    The subject columns are plain values, not foreign keys: an event outlives its job
    (`job.deleted`), and the log is written by triggers, not by the ORM."""

    id = models.BigAutoField(primary_key=True)
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    type = models.CharField(max_length=40, editable=False)
    job_id = models.UUIDField(null=True, blank=True, editable=False)
    batch_id = models.UUIDField(null=True, blank=True, editable=False)
    server_id = models.BigIntegerField(null=True, blank=True, editable=False)
    download_id = models.UUIDField(null=True, blank=True, editable=False)
    # Whose change it is (a job's, batch's or download's owner); null: everyone's (servers,
    # the queue's switches), which every key may see.
    owner_id = models.BigIntegerField(null=True, blank=True, editable=False)
    # The subject as it was after the change (events_app.messages renders it).
    data = models.JSONField(default=dict, editable=False)
    created_at = models.DateTimeField(editable=False)

    class Meta:
        indexes = [
            # The sequencer's work: the events still without a public id (PostgreSQL).
            models.Index(
                fields=["id"], name="event_unsequenced", condition=models.Q(seq__isnull=True)
            ),
            models.Index(fields=["owner_id", "seq"], name="event_owner_seq"),
            models.Index(fields=["job_id", "seq"], name="event_job_seq"),
            models.Index(fields=["batch_id", "seq"], name="event_batch_seq"),
            models.Index(fields=["created_at"], name="event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.seq or '-'} {self.type}"


class EventLog(models.Model):
    """The log's one row (id 1): the highest public id pruned so far. A reader whose cursor
    is below it may have missed events (the feed answers 410, the stream a reset)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    pruned_through = models.BigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="eventlog_singleton"),
        ]

    def __str__(self) -> str:
        return f"Events pruned through {self.pruned_through}"
