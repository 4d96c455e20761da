"""Fault injection switches, settable from any thread while the simulator runs."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Faults:
    """Runtime-settable faults.

    * `refuse_connections`: True closes the listening socket (TCP connects are refused; requests
      already in flight carry on); False re-binds the same port.
    * `drop_mid_job`: the next N generation requests (txt2img/img2img) lose their connection
      halfway through the job, without a response. The job itself carries on to the end on the
      "server" (it becomes `completed`), as when a network link breaks.
    * `error_500_next`: the next N generation requests fail with a 500 (`OutOfMemoryError`) in
      the flavour's shape once the job has started (the failed task stays `active`).
    * `stall_seconds`: while > 0, every generation hangs this long once it holds the queue lock,
      before it starts: it is still reported `queued` ("In queue: 1/n"), nothing is `active`,
      and the stall cannot be interrupted (an interrupt meanwhile is lost, as on a server).
    """

    def __init__(self, on_refuse_change: Callable[[bool], None]) -> None:
        self._lock = threading.Lock()
        self._refuse_lock = threading.Lock()
        self._on_refuse_change = on_refuse_change
        self._refuse = False
        self._drop_mid_job = 0
        self._error_500_next = 0
        self._stall_seconds = 0.0

    @property
    def refuse_connections(self) -> bool:
        return self._refuse

    @refuse_connections.setter
    def refuse_connections(self, value: bool) -> None:
        # Serialised so that the listener state always matches the last value set.
        with self._refuse_lock:
            value = bool(value)
            if value == self._refuse:
                return
            self._refuse = value
            self._on_refuse_change(value)

    @property
    def drop_mid_job(self) -> int:
        with self._lock:
            return self._drop_mid_job

    @drop_mid_job.setter
    def drop_mid_job(self, value: int) -> None:
        with self._lock:
            self._drop_mid_job = max(0, int(value))

    @property
    def error_500_next(self) -> int:
        with self._lock:
            return self._error_500_next

    @error_500_next.setter
    def error_500_next(self, value: int) -> None:
        with self._lock:
            self._error_500_next = max(0, int(value))

    @property
    def stall_seconds(self) -> float:
        with self._lock:
            return self._stall_seconds

    @stall_seconds.setter
    def stall_seconds(self, value: float) -> None:
        with self._lock:
            self._stall_seconds = max(0.0, float(value))

    def take_drop_mid_job(self) -> bool:
        """Consume one `drop_mid_job` if any is pending."""
        with self._lock:
            if self._drop_mid_job <= 0:
                return False
            self._drop_mid_job -= 1
            return True

    def take_error_500(self) -> bool:
        """Consume one `error_500_next` if any is pending."""
        with self._lock:
            if self._error_500_next <= 0:
                return False
            self._error_500_next -= 1
            return True

    def clear(self) -> None:
        """Reset every fault (and accept connections again)."""
        with self._lock:
            self._drop_mid_job = 0
            self._error_500_next = 0
            self._stall_seconds = 0.0
        self.refuse_connections = False
