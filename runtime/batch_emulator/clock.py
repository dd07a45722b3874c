"""Timed events: one scheduler thread runs each callback when it is due, holding the engine's lock."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger("batch_emulator")


class Clock:
    """A heap of (due time, callback); callbacks run on the scheduler thread with `lock` held."""

    def __init__(self, lock: threading.RLock) -> None:
        self._cond = threading.Condition(lock)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-scheduler", daemon=True)
        self._thread.start()

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._events, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._events and self._events[0][0] <= now:
                        break
                    timeout = self._events[0][0] - now if self._events else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                due: list[Callable[[], None]] = []
                now = time.monotonic()
                while self._events and self._events[0][0] <= now:
                    due.append(heapq.heappop(self._events)[2])
                for fn in due:
                    try:
                        fn()
                    except (OSError, ValueError, KeyError, RuntimeError):
                        LOG.exception("batch emulator: scheduled event failed")
