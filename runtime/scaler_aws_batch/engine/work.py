"""What flows into and out of the engine: a task as the adapter hands it over, and its outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from scaler_aws_batch.resources import Resources
from scaler_aws_batch.wire import TaskBlobs, sha256_hex

#: Seconds from an arbitrary start (``time.monotonic`` in service; a fake one in unit tests).
Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class TaskWork:
    """One task as the adapter hands it over: the client's bytes plus how to run it."""

    blobs: TaskBlobs
    resources: Resources = dataclasses.field(default_factory=Resources)
    queue: str | None = None
    timeout_seconds: int | None = None

    @property
    def task_id(self) -> str:
        return self.blobs.task_id

    def pack_key(self) -> tuple[object, ...]:
        return (sha256_hex(self.blobs.serializer), self.resources, self.queue, self.timeout_seconds)


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """A finished task: bytes for Scaler's object storage. ``success`` bytes are the client serializer's output;
    failure bytes are a pickled exception (Scaler's failure format)."""

    success: bool
    body: bytes
