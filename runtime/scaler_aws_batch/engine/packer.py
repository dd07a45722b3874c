"""The packer: tasks that share serializer, resources, queue and timeout gather into groups, and a group is due when
none has arrived for ``array_window_seconds`` (or the first has waited its max wait, or a full array is there).

The max wait starts at ``array_max_wait_seconds`` and doubles, up to ``array_max_wait_cap_seconds``, while a stream
of tasks lasts (every group is cut at the bound); a pause halves it again. Pure timing: every method is given the
time, so the packer is tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable

from scaler_aws_batch.engine.settings import EngineSettings

PackKey = tuple[object, ...]


class Packer:
    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._pending: dict[PackKey, list[str]] = collections.OrderedDict()
        self._since: dict[PackKey, float] = {}
        self._last: dict[PackKey, float] = {}  # when the group's newest task arrived
        self._max_wait: dict[PackKey, float] = {}  # pack key -> its grown max wait, while a stream lasts
        #: Set when a group may have come due earlier than the packer's loop planned.
        self.wake = asyncio.Event()

    def add(self, key: PackKey, task_id: str, now: float) -> None:
        """Queue a task: it joins the group of tasks with the same pack key."""
        self._pending.setdefault(key, []).append(task_id)
        self._since.setdefault(key, now)
        self._last[key] = now
        self.wake.set()

    def remove(self, task_id: str) -> None:
        for ids in self._pending.values():
            if task_id in ids:
                ids.remove(task_id)
                break

    def clear(self) -> None:
        """Forget every queued task (the groups stay, empty, and come due as before)."""
        for ids in self._pending.values():
            ids.clear()

    def due_keys(self, now: float) -> list[PackKey]:
        return [
            key
            for key in self._since
            if self.due_at(key) <= now or len(self._pending[key]) >= self._settings.max_array_size
        ]

    def take(self, key: PackKey, now: float, is_live: Callable[[str], bool]) -> list[list[str]]:
        """Take a due group: its live task ids, in chunks of at most ``max_array_size``. Adjusts the key's max wait:
        cut by the bound while tasks kept arriving, gather longer next time; a pause (the scheduler hands tasks over
        in bursts) halves it again, so that one gap does not undo a long stream's arrays."""
        still_coming = self._last[key] + self._settings.array_window_seconds > now
        ids = [task_id for task_id in self._pending.pop(key) if is_live(task_id)]
        del self._since[key], self._last[key]
        if still_coming:
            self._max_wait[key] = min(2 * self.max_wait_for(key), self._settings.array_max_wait_cap_seconds)
        elif self.max_wait_for(key) / 2 > self._settings.array_max_wait_seconds:
            self._max_wait[key] = self.max_wait_for(key) / 2
        else:
            self._max_wait.pop(key, None)
        size = self._settings.max_array_size
        return [ids[start : start + size] for start in range(0, len(ids), size)]

    def requeue(self, key: PackKey, task_ids: list[str], now: float, delay: float) -> None:
        """Put tasks back so that their group comes due ``delay`` from ``now`` (a transient submission failure)."""
        self._pending.setdefault(key, []).extend(task_ids)
        self._since[key] = min(self._since.get(key, math.inf), now + delay - self.max_wait_for(key))
        self._last[key] = min(self._last.get(key, math.inf), now + delay - self._settings.array_window_seconds)
        self.wake.set()

    def next_due(self) -> float | None:
        """When the earliest group comes due (None: no group is pending)."""
        return min((self.due_at(key) for key in self._since), default=None)

    def max_wait_for(self, key: PackKey) -> float:
        return max(self._settings.array_window_seconds, self._max_wait.get(key, self._settings.array_max_wait_seconds))

    def due_at(self, key: PackKey) -> float:
        window = self._settings.array_window_seconds
        return min(self._last[key] + window, self._since[key] + self.max_wait_for(key))
