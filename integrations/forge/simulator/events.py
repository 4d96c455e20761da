"""A thread-safe, append-only record of what the simulator did, with waiting helpers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class EventLog:
    """Append-only list of event dicts `{"type", "t" (monotonic), "seq", ...}`.

    Iteration and indexing work on a snapshot, so readers never see a list being mutated.
    `seq` is the event's index, usable as `since=` in `wait_for`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Event] = []

    def record(self, type: str, **fields: Any) -> Event:
        with self._cond:
            event: Event = {"type": type, "t": time.monotonic(), "seq": len(self._items), **fields}
            self._items.append(event)
            self._cond.notify_all()
        logger.debug("event %s %s", type, fields)
        return event

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self._items)

    def of_type(self, type: str) -> list[Event]:
        return [e for e in self.snapshot() if e["type"] == type]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __getitem__(self, index: int) -> Event:
        with self._cond:
            return self._items[index]

    def wait_for(
        self,
        type: str,
        predicate: Callable[[Event], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Event:
        """Return the first event (from index `since`) of `type` matching `predicate`.

        Past events count, so there is no race with an event recorded just before the call.
        Raises `TimeoutError` when none arrives within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for event in self._items[checked:]:
                    if event["type"] == type and (predicate is None or predicate(event)):
                        return event
                checked = max(checked, len(self._items))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {type!r} event within {timeout}s")
                self._cond.wait(remaining)
