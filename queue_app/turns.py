"""Fair turns between users: the `turn` a job gets when it is queued.

Claims order the jobs of one priority by (turn, age) (queue_app.dispatch._QUEUE_HEAD), so
turns, not arrival, decide who goes next. Like a virtual clock of fair queuing:

* each of a user's jobs in a queue takes the turn after their previous active one there:
  a user who queues 500 jobs at once holds turns t, t+1, ..., t+499;
* a user with nothing active there joins at the queue's current turn (the highest turn
  running in that queue; with nothing running, the turn of the queue's head): after
  the job running now, before the rest of the long batch.

So a single job of user B waits for one job of A's, not for A's whole batch, and two
users who both queue many jobs alternate. A queue is a server's own jobs, or the "any"
pool; the turns of the two are compared as numbers where they meet (a server's claim
merges its own queue's head with the pool's). The checkpoint look-ahead
(queue_app.scheduling) then works on that order, as before on age.

Each reading is one short index range (no count of the queue): the user's active jobs by
queue and turn (index job_active_owner_turn), the few running jobs, the queue's head.
"""

from typing import Any

from django.db.models import Max

from queue_app.models import ACTIVE_STATUSES, ANY_SERVER, Job, JobStatus
from servers_app.models import Server

__all__ = ["job_next_turn"]


def job_next_turn(*, owner: Any, server: Server | None) -> int:
    """The turn of a job `owner` queues now for `server` (None: "any")."""
    target = server.alias if server is not None else ANY_SERVER
    last = (
        Job.objects.filter(owner=owner, target_server_alias=target, status__in=ACTIVE_STATUSES)
        .order_by("-turn")
        .values_list("turn", flat=True)
        .first()
    )
    mine = last + 1 if last is not None else 0
    return max(mine, _current_turn(server))


def _current_turn(server: Server | None) -> int:
    """The queue's clock: the highest turn running in it, else the turn of its head."""
    if server is not None:
        running = Job.objects.filter(server=server, status=JobStatus.PROCESSING)
        pending = Job.objects.filter(server=server, status=JobStatus.PENDING)
    else:
        running = Job.objects.filter(target_server_alias=ANY_SERVER, status=JobStatus.PROCESSING)
        pending = Job.objects.filter(
            server__isnull=True, target_server_alias=ANY_SERVER, status=JobStatus.PENDING
        )
    current = running.aggregate(turn=Max("turn"))["turn"]
    if current is not None:
        return int(current)
    head = pending.order_by("-priority", "turn", "created_at").values_list("turn", flat=True)
    return int(head.first() or 0)
