"""What a backend package hands the CLI: its name, its settings class and how to build it.

Each backend package (``backends/<name>/``) exposes one :class:`BackendKind` as ``KIND``; the CLI iterates
:data:`scaler_aws_batch.backends.registry.BACKEND_KINDS`, so adding a backend touches no ``if``/``elif``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from scaler_aws_batch import config

if TYPE_CHECKING:
    from scaler_aws_batch.backends.base import JobBackend
    from scaler_aws_batch.capabilities import QueueRouting
    from scaler_aws_batch.signing import KeyRing
    from scaler_aws_batch.stores.base import ObjectStore
    from scaler_aws_batch.worker_settings import WorkerSettings

S = TypeVar("S", bound=config.Settings)


@dataclasses.dataclass(frozen=True)
class BackendSetup:
    """A built backend with its store, queue routing and the key ring that signs payloads and checks results."""

    backend: JobBackend
    store: ObjectStore
    routing: QueueRouting
    keys: KeyRing
    #: User tags the backend's own configuration puts on every job (AWS: the stack's ``job_tags``).
    job_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: What tells this deployment apart in the default adapter id (the job queue, the work directory).
    deployment: str = ""


@dataclasses.dataclass(frozen=True)
class BackendKind(Generic[S]):
    """One backend as the CLI sees it: settings in, backend out, and the timing that suits it."""

    name: str
    settings: type[S]
    build: Callable[[S, WorkerSettings], BackendSetup]
    #: Reconcile interval bounds and the array window, in seconds (defaults suit a remote scheduler).
    poll_interval_min_seconds: float = 0.5
    poll_interval_max_seconds: float = 5.0
    array_window_seconds: float = 0.5
    #: The longest time between two describe calls while jobs run (results are found by listing the store).
    describe_interval_max_seconds: float = 5.0
    #: The shortest job timeout the backend accepts.
    min_timeout_seconds: int = 1
    #: How long a submission whose caller died may still create a job that ``find_jobs`` then finds (AWS: a
    #: SubmitJob may run until the client's read timeout, and ListJobs lags). An adapter that took its id over from
    #: a dead one looks for its jobs again this long after taking stock. 0: a submission cannot land later.
    submit_landing_seconds: float = 0.0
    #: Reads the settings from flags, environment and the config file's table; backends with another source
    #: (AWS: the stack outputs) pass their own.
    load: Callable[[argparse.Namespace, Mapping[str, str], Mapping[str, Any]], S] | None = None

    def load_settings(self, args: argparse.Namespace, env: Mapping[str, str], from_file: Mapping[str, Any]) -> S:
        if self.load is not None:
            return self.load(args, env, from_file)
        loaded: S = config.load(self.settings, args, env, from_file)
        return loaded
