"""What a simulated server keeps across restarts, as a real one keeps it in files.

The checkpoint and LoRA files "on disk" (the API lists a change only after a refresh or a
restart), the options saved with POST /sdapi/v1/options (`config.json`) and the checkpoint
hashes computed so far (`cache.json`). A `Runtime` reads these when it is created and a
restart does not clear them. Knows nothing of the HTTP server or the API that use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .config import SimLora, SimModel


class Disk:
    """The files of one simulated server. Thread-safe: every read answers a copy.

    `hash_cache` is shared with each `Runtime` as the same set (the runtime adds to it
    under its own lock), so a hash computed before a restart is still known after it.
    """

    def __init__(
        self,
        *,
        models: Iterable[SimModel],
        loras: Iterable[SimLora],
        options: Mapping[str, Any],
    ) -> None:
        self._lock = threading.Lock()
        self._models = list(models)
        self._loras = list(loras)
        self._options = dict(options)
        self.hash_cache: set[tuple[str, str]] = set()

    def models(self) -> list[SimModel]:
        with self._lock:
            return list(self._models)

    def loras(self) -> list[SimLora]:
        with self._lock:
            return list(self._loras)

    def options(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._options)

    def set_models(self, models: Iterable[SimModel]) -> None:
        with self._lock:
            self._models = list(models)

    def set_loras(self, loras: Iterable[SimLora]) -> None:
        with self._lock:
            self._loras = list(loras)

    def save_options(self, changed: Mapping[str, Any]) -> None:
        with self._lock:
            self._options.update(changed)
