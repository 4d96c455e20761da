"""The event stream, GET /api/v1/events (Server-Sent Events) through Django's ASGI handler:
live events, replay after a cursor without gaps or duplicates, scopes, filters, tokens,
heartbeats, resets, lagging clients, and the poll path of databases without LISTEN."""

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import connection
from django.test import AsyncClient
from model_bakery import baker

from core_app.models import KeyScope
from events_app import views
from events_app.messages import event_message
from events_app.models import Event, EventLog
from events_app.sequencer import events_sequence
from events_app.stream import events_hub, events_streams_close
from queue_app.models import Batch, Job, JobStatus
from servers_app.models import Server
from tests.events_app.sse import SSE, run
from tests.support import assert_error, new_key

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


@pytest.fixture(autouse=True)
def _quick(settings) -> None:
    settings.MOBILESD_EVENTS_SAFETY_POLL_SECONDS = 0.5
    settings.MOBILESD_EVENTS_POLL_SECONDS = 0.05


@pytest.fixture
def laptop(db) -> Server:
    return baker.make(Server, alias="Laptop", api_url="http://127.0.0.1:7860")


@pytest.fixture
def ada(db) -> Any:
    return User.objects.create_user("ada")


@pytest.fixture
def bob(db) -> Any:
    return User.objects.create_user("bob")


def key_of(user: Any, scope: str = KeyScope.CLIENT) -> str:
    _, raw = new_key(f"{user.username}'s phone", username=user.username, scope=scope)
    return raw


def new_job(owner: Any, server: Server, **fields: Any) -> Job:
    return baker.make(
        Job,
        owner=owner,
        server=server,
        target_server_alias=server.alias,
        generation_params={"positive_prompt": "a lighthouse"},
        **fields,
    )


def head() -> int:
    events_sequence()
    return (
        Event.objects.filter(seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
        or 0
    )


async def open_stream(key: str | None, query: str = "", **headers: Any) -> SSE:
    client = AsyncClient()
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response = await client.get(f"/api/v1/events{query}", headers=headers)
    assert response.status_code == 200, getattr(response, "content", b"")
    return SSE(response)


async def started(key: str | None, query: str = "", **headers: Any) -> tuple[SSE, int]:
    """A stream, read up to its `ready`; and the head it is live from."""
    stream = await open_stream(key, query, **headers)
    ready = await stream.until("ready")
    return stream, ready.data["head"]


async def refused(key: str | None, query: str = "", **headers: Any) -> Any:
    client = AsyncClient()
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response = await client.get(f"/api/v1/events{query}", headers=headers)
    assert response["Content-Type"] == "application/json"
    return response


def test_a_stream_is_text_event_stream_that_no_proxy_buffers(ada):
    key = key_of(ada)

    async def scenario() -> Any:
        stream = await open_stream(key)
        first = await stream.next()
        await stream.close()
        return stream.response, first

    response, first = run(scenario)

    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert first.retry == views.RETRY_MS


def test_a_live_stream_says_the_head_it_starts_from(ada, laptop):
    new_job(ada, laptop)
    key = key_of(ada)
    expected = head()

    async def scenario() -> Any:
        stream = await open_stream(key)
        ready = await stream.until("ready")
        await stream.close()
        return ready

    ready = run(scenario)

    assert ready.id == expected
    assert ready.data == {"head": expected}


def test_a_change_reaches_a_live_stream_as_its_event_message(ada, laptop):
    key = key_of(ada)

    async def scenario() -> Any:
        stream, _ = await started(key)
        job = await sync_to_async(new_job)(ada, laptop, priority=4)
        (message,) = await stream.events(1)
        await stream.close()
        return job, message

    job, message = run(scenario)

    event = Event.objects.get(seq=message.id)
    assert message.event == "job.queued"
    assert message.data == event_message(event)
    assert message.data["job"]["mobilesd_job_id"] == str(job.pk)
    assert message.data["job"]["priority"] == 4


def test_a_client_that_reconnects_with_its_last_event_id_receives_every_missed_event_once_in_order(
    ada, laptop
):
    key = key_of(ada)
    job = new_job(ada, laptop, status=JobStatus.PROCESSING)

    def progress(fraction: float) -> None:
        Job.objects.filter(pk=job.pk).update(progress={"fraction": fraction})

    async def scenario() -> tuple[list[int | None], list[int | None]]:
        stream, _ = await started(key)
        await sync_to_async(progress)(0.1)
        await sync_to_async(progress)(0.2)
        seen = [m.id for m in await stream.events(2)]
        await stream.close()  # the phone sleeps...
        for step in range(3, 9):
            await sync_to_async(progress)(step / 10)
        # ... and wakes up, resuming after the last id it saw; more changes arrive meanwhile.
        resumed = await open_stream(key, **{"Last-Event-ID": str(seen[-1])})
        await sync_to_async(progress)(0.9)
        await sync_to_async(progress)(1.0)
        after = [m.id for m in await resumed.events(8)]
        ready_seen = resumed  # the stream keeps going: nothing more comes
        await ready_seen.close()
        return seen, after

    seen, after = run(scenario)

    expected = list(
        Event.objects.filter(job_id=job.pk, seq__gt=seen[-1])
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert len(expected) == 8
    assert after == expected


def test_since_replays_like_last_event_id_which_wins_over_it(ada, laptop):
    key = key_of(ada)
    jobs = [new_job(ada, laptop) for _ in range(3)]
    events_sequence()
    first, second, third = (Event.objects.get(job_id=job.pk, type="job.queued").seq for job in jobs)

    async def scenario() -> tuple[list[int | None], list[int | None]]:
        by_since = await open_stream(key, f"?since={first}")
        replayed = [m.id for m in await by_since.events(2)]
        await by_since.close()
        both = await open_stream(key, f"?since={first}", **{"Last-Event-ID": str(second)})
        (resumed,) = await both.events(1)
        await both.close()
        return replayed, [resumed.id]

    replayed, resumed = run(scenario)

    assert replayed == [second, third]
    assert resumed == [third]


def test_an_event_committed_during_the_replay_arrives_once_after_it(ada, laptop, monkeypatch):
    key = key_of(ada)
    new_job(ada, laptop)
    cursor = head() - 1
    original = views._replay_page
    made: list[Job] = []

    def replay_while_a_job_commits(*args: Any) -> Any:
        if not made:
            made.append(new_job(ada, laptop))
        return original(*args)

    monkeypatch.setattr(views, "_replay_page", replay_while_a_job_commits)

    async def scenario() -> list[Any]:
        stream = await open_stream(key, f"?since={cursor}")
        messages = [await stream.next() for _ in range(4)]  # retry, replay, ready, live
        await stream.close()
        return messages

    _, replayed, ready, live = run(scenario)

    assert replayed.id == cursor + 1
    assert ready.event == "ready"
    assert live.data["job_id"] == str(made[0].pk)
    assert live.id > ready.id


def test_a_client_key_never_receives_another_users_events(ada, bob, laptop):
    ada_key, admin_key = key_of(ada), key_of(bob, KeyScope.ADMIN)

    async def scenario() -> tuple[list[Any], list[Any]]:
        adas, _ = await started(ada_key)
        admins, _ = await started(admin_key)
        await sync_to_async(new_job)(bob, laptop)
        await sync_to_async(Server.objects.filter(pk=laptop.pk).update)(is_online=False)
        await sync_to_async(new_job)(ada, laptop)
        ada_saw = await adas.events(2)
        admin_saw = await admins.events(3)
        await adas.close()
        await admins.close()
        return ada_saw, admin_saw

    ada_saw, admin_saw = run(scenario)

    assert [m.event for m in ada_saw] == ["server.offline", "job.queued"]
    assert ada_saw[1].data["job"]["mobilesd_job_id"] == str(Job.objects.get(owner=ada).pk)
    assert [m.event for m in admin_saw] == ["job.queued", "server.offline", "job.queued"]


def test_a_client_keys_replay_leaves_out_another_users_events(ada, bob, laptop):
    ada_key = key_of(ada)
    cursor = head()
    new_job(bob, laptop)
    mine = new_job(ada, laptop)

    async def scenario() -> list[Any]:
        stream = await open_stream(ada_key, f"?since={cursor}")
        replayed = []
        while (message := await stream.next()).event != "ready":
            if "." in message.event:
                replayed.append(message)
        await stream.close()
        return replayed

    (only,) = run(scenario)

    assert only.data["job_id"] == str(mine.pk)


def test_filters_by_jobs_batches_and_types(ada, laptop):
    key = key_of(ada)
    batch = baker.make(Batch, owner=ada, name="b", target_server_alias="Laptop")
    one, two, three = (new_job(ada, laptop) for _ in range(3))
    Job.objects.filter(pk=three.pk).update(batch=batch)
    Job.objects.filter(pk__in=[one.pk, two.pk, three.pk]).update(status=JobStatus.CANCELLED)

    async def subjects(query: str) -> list[tuple[str, str | None]]:
        stream = await open_stream(key, query)
        found = []
        while (message := await stream.next()).event != "ready":
            if "." in message.event:
                found.append((message.event, message.data["job_id"]))
        await stream.close()
        return found

    async def scenario() -> dict[str, Any]:
        return {
            "jobs": await subjects(f"?since=0&job_id={one.pk},{two.pk}&types=job.cancelled"),
            "repeated": await subjects(f"?since=0&job_id={one.pk}&job_id={two.pk}&types=job."),
            "batch": await subjects(f"?since=0&batch_id={batch.pk}&types=job.cancelled"),
            "prefix": await subjects("?since=0&types=batch."),
        }

    found = run(scenario)

    assert found["jobs"] == [("job.cancelled", str(one.pk)), ("job.cancelled", str(two.pk))]
    assert [event for event, _ in found["repeated"]] == ["job.queued"] * 2 + ["job.cancelled"] * 2
    assert found["batch"] == [("job.cancelled", str(three.pk))]
    assert [event for event, _ in found["prefix"]] == ["batch.created", "batch.finished"]


def test_live_streams_filtered_by_a_job_or_a_batch_receive_only_its_events(ada, laptop):
    key = key_of(ada)
    batch = baker.make(Batch, owner=ada, name="b", target_server_alias="Laptop")
    job_a = new_job(ada, laptop)
    in_batch = new_job(ada, laptop, batch=batch)
    other = new_job(ada, laptop)

    def change(job: Job, **fields: Any) -> None:
        Job.objects.filter(pk=job.pk).update(**fields)

    async def until_cancelled(stream: SSE, job: Job) -> list[Any]:
        """Its live events up to `job`'s job.cancelled, the last change made."""
        seen: list[Any] = []
        while not seen or (seen[-1].event, seen[-1].data["job_id"]) != (
            "job.cancelled",
            str(job.pk),
        ):
            seen += await stream.events(1)
        return seen

    async def scenario() -> tuple[list[Any], list[Any]]:
        by_job, _ = await started(key, f"?job_id={job_a.pk}")
        by_batch, _ = await started(key, f"?batch_id={batch.pk}")
        for job in (other, job_a, in_batch, other):  # every change, each stream's or not
            await sync_to_async(change)(job, status=JobStatus.PROCESSING, progress={"n": 1})
        for job in (other, job_a, in_batch):
            await sync_to_async(change)(job, status=JobStatus.CANCELLED)
        seen = await until_cancelled(by_job, job_a), await until_cancelled(by_batch, in_batch)
        await by_job.close()
        await by_batch.close()
        return seen

    job_saw, batch_saw = run(scenario)

    assert [(m.event, m.data["job_id"]) for m in job_saw] == [
        ("job.started", str(job_a.pk)),
        ("job.cancelled", str(job_a.pk)),
    ]
    assert {m.data["batch_id"] for m in batch_saw} == {str(batch.pk)}
    assert [(m.event, m.data["job_id"]) for m in batch_saw if m.event.startswith("job.")] == [
        ("job.started", str(in_batch.pk)),
        ("job.cancelled", str(in_batch.pk)),
    ]


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("?job_id=nope", {}, "job_id"),
        ("?batch_id=1,2", {}, "batch_id"),
        ("?types=jobs.completed", {}, "types"),
        ("?types=job", {}, "types"),
        ("?since=-1", {}, "since"),
        ("", {"Last-Event-ID": "ten"}, "Last-Event-ID"),
    ],
)
def test_a_bad_filter_or_cursor_is_a_400_before_the_stream(ada, query, headers, field):
    key = key_of(ada)
    response = run(lambda: refused(key, query, **headers))

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["fields"]


def test_without_a_key_the_stream_is_a_401_in_the_error_shape(db):
    response = run(lambda: refused(None))

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_required"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_refused(ada):
    api_key, raw = new_key("old phone", username=ada.username, scope=KeyScope.CLIENT)
    api_key.revoke()

    response = run(lambda: refused(raw))

    assert response.status_code == 401
    assert response.json()["code"] == "revoked_api_key"


def token_for(raw_key: str) -> dict[str, Any]:
    async def ask() -> Any:
        client = AsyncClient()
        return await client.post(
            "/api/v1/events/token", headers={"Authorization": f"Bearer {raw_key}"}
        )

    response = run(ask)
    assert response.status_code == 200
    return response.json()


def test_a_token_opens_the_stream_as_its_key(ada, bob, laptop):
    token = token_for(key_of(ada))["token"]

    async def scenario() -> list[Any]:
        stream, _ = await started(None, f"?token={token}")
        await sync_to_async(new_job)(bob, laptop)
        await sync_to_async(new_job)(ada, laptop)
        seen = await stream.events(1)
        await stream.close()
        return seen

    (seen,) = run(scenario)

    assert seen.data["job_id"] == str(Job.objects.get(owner=ada).pk)


def test_a_token_says_when_it_expires(ada, settings):
    settings.MOBILESD_EVENTS_TOKEN_SECONDS = 600
    answer = token_for(key_of(ada))

    assert answer["token"]
    assert answer["expires_at"].endswith("Z")


def test_an_expired_token_is_a_401(ada, settings, monkeypatch):
    settings.MOBILESD_EVENTS_TOKEN_SECONDS = 60
    key = key_of(ada)
    real_time = signing.time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 120)
    token = token_for(key)["token"]
    monkeypatch.setattr(signing.time, "time", real_time)

    response = run(lambda: refused(None, f"?token={token}"))

    assert response.status_code == 401
    assert response.json()["code"] == "expired_token"


def test_a_tampered_token_is_a_401(ada):
    token = token_for(key_of(ada))["token"]
    _, _, stamp_and_signature = token.partition(":")
    other_payload = signing.dumps({"k": 999}, salt="another salt").partition(":")[0]
    forged = f"{other_payload}:{stamp_and_signature}"

    response = run(lambda: refused(None, f"?token={forged}"))

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_the_token_of_a_revoked_key_is_a_401(ada):
    api_key, raw = new_key("phone", username=ada.username, scope=KeyScope.CLIENT)
    token = token_for(raw)["token"]
    api_key.revoke()

    response = run(lambda: refused(None, f"?token={token}"))

    assert response.status_code == 401
    assert response.json()["code"] == "revoked_api_key"


@pytest.mark.parametrize("url", ["/api/v1/queue/jobs", "/api/v1/events/token"])
def test_a_stream_token_authenticates_the_stream_only(ada, url):
    token = token_for(key_of(ada))["token"]

    async def elsewhere() -> Any:
        client = AsyncClient()
        if url.endswith("/token"):
            return await client.post(f"{url}?token={token}")
        return await client.get(f"{url}?token={token}")

    response = run(elsewhere)

    assert_error(response, 401, "authentication_required")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_quiet_stream_sends_heartbeats(ada, settings):
    settings.MOBILESD_EVENTS_HEARTBEAT_SECONDS = 0.1
    key = key_of(ada)

    async def scenario() -> Any:
        stream, _ = await started(key)
        message = await stream.next(timeout=5)
        await stream.close()
        return message

    assert run(scenario).comment == "keep-alive"


def test_a_cursor_below_what_is_kept_is_told_to_reset_then_goes_on_live(ada, laptop):
    key = key_of(ada)
    new_job(ada, laptop)
    EventLog.objects.update_or_create(pk=1, defaults={"pruned_through": head()})
    now = head()

    async def scenario() -> list[Any]:
        stream = await open_stream(key, "?since=0")
        messages = [await stream.next() for _ in range(3)]
        await sync_to_async(new_job)(ada, laptop)
        messages += await stream.events(1)
        await stream.close()
        return messages

    _, reset, ready, live = run(scenario)

    assert reset.event == "reset"
    assert reset.data == {"reason": "pruned", "cursor": 0, "head": now}
    assert (ready.event, ready.id) == ("ready", now)
    assert live.id > now


def test_a_cursor_above_the_head_is_told_to_reset(ada):
    key = key_of(ada)

    async def scenario() -> Any:
        stream = await open_stream(key, "?since=999999")
        reset = await stream.until("reset")
        await stream.close()
        return reset

    assert run(scenario).data["reason"] == "unknown_cursor"


def test_a_client_that_falls_too_far_behind_is_ended_with_a_last_message(ada, laptop, settings):
    settings.MOBILESD_EVENTS_CLIENT_BUFFER = 3
    key = key_of(ada)

    async def scenario() -> Any:
        stream, _ = await started(key)
        for _ in range(5):  # the client reads nothing meanwhile
            await sync_to_async(new_job)(ada, laptop)
        last = await sync_to_async(head)()
        hub = events_hub()
        await until(lambda: hub.position >= last)
        message = await stream.next()
        await stream.close()
        return message

    message = run(scenario)

    assert message.event == "closing"
    assert message.data == {"reason": "lagging"}


def test_a_stopping_process_ends_its_streams_with_a_last_message(ada):
    key = key_of(ada)

    async def scenario() -> Any:
        stream, _ = await started(key)
        await events_streams_close("shutdown")
        message = await stream.next()
        await stream.close()
        return message

    assert run(scenario).data == {"reason": "shutdown"}


def test_without_notifications_the_stream_polls(ada, laptop, settings):
    settings.MOBILESD_EVENTS_NOTIFY = False  # as on SQLite, the embedded default
    key = key_of(ada)

    async def scenario() -> Any:
        stream, _ = await started(key)
        assert not events_hub().notify
        job = await sync_to_async(new_job)(ada, laptop)
        (message,) = await stream.events(1)
        await stream.close()
        return job, message

    job, message = run(scenario)

    assert message.data["job_id"] == str(job.pk)


def test_a_staff_session_follows_the_stream(laptop):
    staff = User.objects.create_user("root", is_staff=True)

    async def scenario() -> Any:
        client = AsyncClient()
        await client.aforce_login(staff)
        stream = SSE(await client.get("/api/v1/events"))
        await stream.until("ready")
        await sync_to_async(Server.objects.filter(pk=laptop.pk).update)(is_online=False)
        (message,) = await stream.events(1)
        await stream.close()
        return message

    assert run(scenario).event == "server.offline"


@pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="the hub's LISTEN connection and pg_terminate_backend(): PostgreSQL",
)
def test_after_its_database_connections_are_lost_the_hub_reconnects_and_loses_no_event(ada, laptop):
    key = key_of(ada)

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    def terminate(hub_pid: int) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND (application_name = 'mobilesd-events' OR pid = %s)",
                [hub_pid],
            )
            return len(cursor.fetchall())

    async def scenario() -> tuple[int, Any, Any]:
        stream, _ = await started(key)
        hub = events_hub()
        await until(lambda: hub.connections == 1)
        terminated = await sync_to_async(terminate)(await hub.db(backend_pid))
        job = await sync_to_async(new_job)(ada, laptop)  # while no one listens
        (message,) = await stream.events(1)
        await until(lambda: hub.connections == 2)
        await stream.close()
        return terminated, job, message

    terminated, job, message = run(scenario)

    assert terminated == 2
    assert message.data["job_id"] == str(job.pk)


async def until(probe: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_under_wsgi_the_stream_ends_after_its_replay(ada, laptop, client):
    # manage.py runserver and the sync test client are WSGI: no live part, which they would
    # wait for forever; EventSource reconnects after `retry:` for the next.
    key = key_of(ada)
    cursor = head()
    job = new_job(ada, laptop)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    response = client.get(f"/api/v1/events?since={cursor}")

    with pytest.warns(Warning, match="asynchronous iterators"):  # Django's, under WSGI
        body = b"".join(response).decode()
    assert response["Content-Type"] == "text/event-stream"
    assert "event: job.queued\ndata: " in body
    assert str(job.pk) in body
    assert body.endswith(f'id: {head()}\nevent: ready\ndata: {{"head":{head()}}}\n\n')


def test_an_event_that_cannot_be_rendered_does_not_stop_the_stream(ada, laptop, monkeypatch):
    from events_app import stream as stream_module

    key = key_of(ada)
    real = stream_module.event_message

    def broken_for_batches(event: Event) -> dict[str, Any]:
        if event.type.startswith("batch."):
            raise ValueError("a snapshot it cannot read")
        return real(event)

    monkeypatch.setattr(stream_module, "event_message", broken_for_batches)

    async def scenario() -> list[Any]:
        stream, _ = await started(key)
        await sync_to_async(baker.make)(Batch, owner=ada, name="b", target_server_alias="Laptop")
        await sync_to_async(new_job)(ada, laptop)
        seen = await stream.events(2)
        await stream.close()
        return seen

    batch, job = run(scenario)

    assert (batch.event, batch.data["id"], batch.data["type"]) == (
        "batch.created",
        batch.id,
        "batch.created",
    )
    assert "batch" not in batch.data  # its subject left out, its ids kept
    assert batch.data["batch_id"] == str(Batch.objects.get().pk)
    assert job.event == "job.queued"
