"""What a backend package hands the CLI: its name, its settings and how to build it.

Each backend package (``backends/<name>/``) exposes one :class:`BackendKind` as ``KIND``; the CLI iterates
:data:`scaler_aws_batch.backends.registry.BACKEND_KINDS`, so adding a backend touches no ``if``/``elif``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaler_aws_batch.adapter.task_manager import QueueRouting
    from scaler_aws_batch.backends.base import JobBackend
    from scaler_aws_batch.stores.base import ObjectStore


@dataclasses.dataclass(frozen=True)
class BackendSetup:
    """A built backend with its store and the adapter and engine figures that depend on the backend."""

    backend: JobBackend
    store: ObjectStore
    max_concurrent_jobs: int
    job_timeout_seconds: int
    routing: QueueRouting
    poll_interval_min_seconds: float
    poll_interval_max_seconds: float
    array_window_seconds: float
    #: What tells this deployment apart in the default adapter id (the job queue, the work directory).
    deployment: str = ""


@dataclasses.dataclass(frozen=True)
class BackendKind:
    """One backend as the CLI sees it."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace, Mapping[str, str]], BackendSetup]
