"""The event stream (`GET /api/v1/events`, Server-Sent Events) and its tokens.

The stream is an async view, so that an open stream holds no thread: the checks before it
starts (authentication, scope, throttling, the query) are those of the API, made by a DRF
view (`EventStreamGate`, sync, on a thread for the moment it takes), which also answers
any refusal in the one error shape; then the stream runs on the event loop, fed by the
process's hub (events_app.stream). Django's own sync steps of the request (its signals' sync
receivers, the middleware) run on a thread all the streams share, not on one kept for each
stream (core_app.asgi.LongLivedRequestsHandler, mobilesd/asgi.py).
"""

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from core_app.errors import InvalidInput
from core_app.scopes import owner_scope, request_api_key, request_user
from events_app import schema  # noqa: F401 - registers the token's scheme
from events_app.selectors import events_after, events_head, events_pruned_through
from events_app.sequencer import events_sequence
from events_app.serializers import EventTokenSerializer, ServerSentEventSerializer
from events_app.stream import PAGE, Subscriber, event_sse, events_hub, sse_message
from events_app.tokens import EventTokenAuthentication, event_token_issue

logger = logging.getLogger(__name__)

# The reconnection delay EventSource is told to use (`retry:`), in milliseconds.
RETRY_MS = 3000
# At most this many ids per filter.
MAX_FILTER_IDS = 200
KINDS = ("job", "batch", "server", "queue", "download")
TYPE_RE = re.compile(r"^[a-z]+\.(?:[a-z_]+)?$")


@dataclass(frozen=True)
class StreamRequest:
    """What a stream may see and asked for."""

    owner_id: int | None
    job_ids: frozenset[uuid.UUID]
    batch_ids: frozenset[uuid.UUID]
    types: frozenset[str]
    cursor: int | None  # Last-Event-ID, else ?since=; None: live only


def _values(request: Request, name: str) -> list[str]:
    """A repeatable parameter's values, each also comma-separated."""
    found: list[str] = []
    for value in request.query_params.getlist(name):
        found += [part.strip() for part in value.split(",") if part.strip()]
    return found


def _uuids(values: list[str], name: str) -> frozenset[uuid.UUID]:
    if len(values) > MAX_FILTER_IDS:
        raise InvalidInput({name: [f"At most {MAX_FILTER_IDS} ids."]})
    parsed = set()
    for value in values:
        try:
            parsed.add(uuid.UUID(value))
        except ValueError:
            raise InvalidInput({name: [f"'{value}' is not a valid UUID."]}) from None
    return frozenset(parsed)


def _types(values: list[str]) -> frozenset[str]:
    if len(values) > MAX_FILTER_IDS:
        raise InvalidInput({"types": [f"At most {MAX_FILTER_IDS} types."]})
    for value in values:
        if not TYPE_RE.fullmatch(value) or value.partition(".")[0] not in KINDS:
            raise InvalidInput(
                {
                    "types": [
                        f"'{value}' is not an event type (such as job.completed) nor a prefix "
                        f"of one (such as job.); kinds: {', '.join(KINDS)}."
                    ]
                }
            )
    return frozenset(values)


def _cursor(request: Request) -> int | None:
    # Last-Event-ID wins: EventSource sends it on reconnecting, with the URL (and its
    # ?since=) it was first opened with.
    for name, value in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("since", request.query_params.get("since")),
    ):
        if value is None or value.strip() == "":
            continue
        value = value.strip()
        if not value.isascii() or not value.isdigit() or len(value) > 18:
            raise InvalidInput({name: ["An event id: a whole number, 0 or more."]})
        return int(value)
    return None


class JSONErrorsOnly(BaseContentNegotiation):
    """The stream's refusals are JSON whatever the Accept header says (EventSource sends
    `text/event-stream`); a stream that starts is text/event-stream."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


STREAM_DESCRIPTION = f"""Server-Sent Events: every change of a job, batch, server, download or
the queue, as it commits, that this key may see (a client key: its user's and everyone's;
an admin key: all).

Each event is one message: `id: <event id>`, `event: <type>` (job.queued, job.started,
job.progress, job.preview, job.completed, job.failed, job.cancelled, job.updated, job.deleted,
batch.*, server.*, queue.paused / queue.resumed, download.*), `data: <EventMessage JSON>`.
Other messages: `event: ready` (`id:` and `data.head`: the stream is live after this id;
with a cursor, every missed event up to it came first), `event: reset` (the cursor is older
than what is kept, or unknown: resynchronise from the list endpoints; the stream then goes
on from `data.head`), `event: closing` (the server ends the stream, `data.reason` lagging
or shutdown: reconnect with the last id). A comment `: keep-alive` every
MOBILESD_EVENTS_HEARTBEAT_SECONDS; `retry: {RETRY_MS}` at the start.

Resume with the `Last-Event-ID` header (EventSource sends it itself) or `?since=<id>`;
without either the stream starts at the head. Browsers' EventSource cannot send headers:
use `?token=` from POST /api/v1/events/token."""


def _filter_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, many=True, explode=True, description=description)


class EventStreamGate(APIView):
    """The checks before a stream starts; also what the OpenAPI document describes."""

    authentication_classes = [
        EventTokenAuthentication,
        *cast(list[type[BaseAuthentication]], api_settings.DEFAULT_AUTHENTICATION_CLASSES),
    ]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsOnly

    @extend_schema(
        summary="Follow events live (Server-Sent Events), replaying what was missed",
        description=STREAM_DESCRIPTION,
        operation_id="events_stream",
        parameters=[
            _filter_parameter("job_id", "Only these jobs' events (repeat, or comma-separate)."),
            _filter_parameter(
                "batch_id", "Only these batches' events and their jobs' (repeat or comma)."
            ),
            _filter_parameter(
                "types", "Only these types (job.completed) or prefixes (job.); repeat or comma."
            ),
            OpenApiParameter("since", int, description="Replay the events after this id."),
            OpenApiParameter(
                "Last-Event-ID",
                int,
                location=OpenApiParameter.HEADER,
                description="Replay the events after this id (wins over `since`).",
            ),
            OpenApiParameter(
                "token", str, description="A stream token (POST /api/v1/events/token)."
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=ServerSentEventSerializer,
                description="The stream, message by message; an event's `data` is an EventMessage.",
            )
        },
    )
    def get(self, request: Request) -> Response:
        owner = owner_scope(request)
        admitted = StreamRequest(
            owner_id=None if owner is None else owner.pk,
            job_ids=_uuids(_values(request, "job_id"), "job_id"),
            batch_ids=_uuids(_values(request, "batch_id"), "batch_id"),
            types=_types(_values(request, "types")),
            cursor=_cursor(request),
        )
        return Response({"admitted": admitted})


class EventTokenView(APIView):
    @extend_schema(
        request=None,
        responses={200: EventTokenSerializer},
        summary="A short-lived token for the event stream (EventSource)",
        description="Good for MOBILESD_EVENTS_TOKEN_SECONDS and while this key is active: "
        "`new EventSource('/api/v1/events?token=' + token)`.",
        operation_id="events_token_create",
    )
    def post(self, request: Request) -> Response:
        token, expires_at = event_token_issue(
            api_key=request_api_key(request), user=request_user(request)
        )
        return Response(EventTokenSerializer({"token": token, "expires_at": expires_at}).data)


_gate = EventStreamGate.as_view()


def _closing[**P, T](work: Callable[P, T]) -> Callable[P, T]:
    """`work`, then its thread's database connection closed. A stream's sync steps run on
    the loop's shared pool of threads (thread_sensitive=False), not on a thread of their
    own request: that thread lives as long as the stream, and kept one idle PostgreSQL
    connection per open stream; the pool also bounds how many connections streams opening
    at once take (a thousand phones reconnecting after a restart)."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return work(*args, **kwargs)
        finally:
            if not connection.in_atomic_block:  # a test's transaction stays its own
                connection.close()

    return run


@csrf_exempt
async def event_stream(request: HttpRequest) -> HttpResponseBase:
    """GET /api/v1/events: the gate's checks, then the stream."""
    answer = await sync_to_async(_closing(_gate), thread_sensitive=False)(request)
    admitted = getattr(answer, "data", None)
    if answer.status_code != 200 or not isinstance(admitted, dict) or "admitted" not in admitted:
        return _as_json(answer)
    stream = admitted["admitted"]
    # A WSGI server (manage.py runserver, the sync test client) would gather the whole
    # stream before sending any of it: there it ends after `ready`, and EventSource comes
    # back for more after `retry:`.
    response = StreamingHttpResponse(
        _messages(stream, live=isinstance(request, ASGIRequest)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once
    return response


# What the API's URL conf and drf-spectacular see: the gate's class (the document describes
# it), the async view's behaviour.
event_stream.cls = EventStreamGate  # type: ignore[attr-defined]
event_stream.initkwargs = {}  # type: ignore[attr-defined]


def _as_json(answer: Any) -> HttpResponseBase:
    """A refusal of the gate (the one error shape) as a plain JSON response."""
    if not isinstance(answer, Response):
        return answer
    response = JsonResponse(answer.data, status=answer.status_code, safe=False)
    for name in ("WWW-Authenticate", "Retry-After", "Allow"):
        if answer.has_header(name):
            response[name] = answer[name]
    return response


async def _messages(stream: StreamRequest, *, live: bool = True) -> AsyncIterator[bytes]:
    # No log context here: an async generator runs in whichever context reads it next.
    subscriber = None
    if live:  # subscribed before the head is read: nothing falls between replay and live
        subscriber = Subscriber(
            owner_id=stream.owner_id,
            job_ids=set(stream.job_ids),
            batch_ids=set(stream.batch_ids),
            types=set(stream.types),
        )
        hub = events_hub()
        await hub.subscribe(subscriber)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        head = await sync_to_async(_closing(_current_head), thread_sensitive=False)()
        async for message in _from_cursor(stream, head):
            yield message
        yield sse_message(id=head, event="ready", data={"head": head})
        if subscriber is None:
            return
        await _release_database()
        async for message in _live(subscriber, head):
            yield message
    finally:
        if subscriber is not None:
            hub.unsubscribe(subscriber)


def _current_head() -> int:
    # Numbered first: an event committed before the stream opened is below its head.
    events_sequence()
    return events_head()


async def _from_cursor(stream: StreamRequest, head: int) -> AsyncIterator[bytes]:
    """The replay: every event after the cursor up to `head`, in order; or a reset when
    events after the cursor may be gone (pruned) or the cursor is not one of this log's."""
    if stream.cursor is None:
        return
    position = stream.cursor
    while True:
        pruned = await sync_to_async(_closing(events_pruned_through), thread_sensitive=False)()
        if position < pruned or position > head:
            reason = "pruned" if position < pruned else "unknown_cursor"
            yield sse_message(
                id=head,
                event="reset",
                data={"reason": reason, "cursor": stream.cursor, "head": head},
            )
            return
        page = await sync_to_async(_closing(_replay_page), thread_sensitive=False)(
            stream, position, head
        )
        for seq, message in page:
            yield message
            position = seq
        if len(page) < PAGE:
            return


def _replay_page(stream: StreamRequest, after: int, head: int) -> list[tuple[int, bytes]]:
    events = events_after(
        after,
        owner_id=stream.owner_id,
        job_ids=stream.job_ids,
        batch_ids=stream.batch_ids,
        types=stream.types,
        limit=PAGE,
        until=head,
    )
    return [(event.seq or 0, event_sse(event)) for event in events]


async def _release_database() -> None:
    """From here on the stream needs no database: the request's connections go back now
    rather than when the stream ends (an open stream must not hold one of PostgreSQL's
    few; the hub reads for every stream on its own)."""
    await sync_to_async(connections.close_all)()


async def _live(subscriber: Subscriber, position: int) -> AsyncIterator[bytes]:
    heartbeat = float(settings.MOBILESD_EVENTS_HEARTBEAT_SECONDS)
    while True:
        try:
            item = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        if subscriber.closed is not None:
            yield sse_message(event="closing", data={"reason": subscriber.closed})
            return
        if item is None:
            continue
        seq, message = item
        if seq > position:  # the replay (or an earlier live copy) had it
            position = seq
            yield message
