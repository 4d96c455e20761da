"""A Server-Sent Events reader for tests: the stream of Django's AsyncClient, parsed into
messages, each read with a deadline, and each message's data checked against the OpenAPI
document (tests/openapi_check.py)."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync

from events_app.stream import events_hub_stop
from tests.openapi_check import check_stream_message


@dataclass
class Message:
    event: str = "message"
    data: Any = None
    id: int | None = None
    retry: int | None = None
    comment: str | None = None


class SSE:
    """The messages of a streamed response, one at a time."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self._chunks = aiter(response.streaming_content)
        self._buffer = b""

    async def next(self, timeout: float = 10.0) -> Message:
        while b"\n\n" not in self._buffer:
            chunk = await asyncio.wait_for(anext(self._chunks), timeout)
            self._buffer += chunk
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        message = Message()
        for line in block.decode().split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comment = value
            elif name == "event":
                message.event = value
            elif name == "data":
                message.data = json.loads(value)
            elif name == "id":
                message.id = int(value)
            elif name == "retry":
                message.retry = int(value)
        if message.data is not None:
            check_stream_message(message.event, message.data)
        return message

    async def events(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The next `count` event messages (comments and control messages skipped)."""
        found: list[Message] = []
        while len(found) < count:
            message = await self.next(timeout)
            if message.comment is None and message.retry is None and "." in message.event:
                found.append(message)
        return found

    async def until(self, event: str, timeout: float = 10.0) -> Message:
        while True:
            message = await self.next(timeout)
            if message.event == event and message.comment is None and message.retry is None:
                return message

    async def close(self) -> None:
        await self._chunks.aclose()


def run[T](scenario: Callable[[], Awaitable[T]]) -> T:
    """Run an async scenario from a sync test (its ORM calls through sync_to_async reach
    the test's own thread), then stop the hub of its event loop."""

    async def main() -> T:
        try:
            return await scenario()
        finally:
            await events_hub_stop()

    return async_to_sync(main)()
