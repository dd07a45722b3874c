"""Settings of ``scaler-batch worker`` that every backend shares (the ``[worker]`` table of the config file)."""

from __future__ import annotations

import dataclasses
import re

from scaler_aws_batch.config import Settings, check_positive, check_whole, setting, where

_PYTHON_TAG = re.compile(r"^\d+\.\d+$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True)
class WorkerSettings(Settings):
    section = "worker"

    scheduler: str = setting("", "The scheduler, `tcp://host:port`.", default_text="required")
    object_storage: str | None = setting(
        None,
        "Scaler's object storage address, when the one the scheduler advertises is not reachable (NAT, containers).",
        default_text="from the scheduler",
    )
    backend: str = setting("local", "Where jobs run: `local` processes, `aws-batch` or `slurm`.")
    client_python: str | None = setting(
        None,
        "The clients' Python `major.minor`, stamped into each payload; the runner refuses a payload for another "
        "version with a message that says how to fix it.",
        default_text="the worker's Python",
    )
    max_concurrent_jobs: int = setting(
        1000,
        "Tasks in flight at once (each task is one job or one array child). Tasks beyond it wait in the adapter, "
        "highest Scaler priority first.",
    )
    job_timeout_seconds: int = setting(
        3600,
        "Seconds per job attempt, unless a task asks for its own with the `timeout` capability. AWS requires at "
        "least 60.",
        long="--job-timeout",
    )
    array_window: float | None = setting(
        None,
        "Seconds tasks are gathered before being submitted together as one array job.",
        default_text="0.02 local, 0.5 AWS, 0.5 Slurm",
    )
    queue_size: int = setting(
        0,
        "How many tasks the scheduler may hand this adapter at once; those beyond the running ones wait here, "
        "highest priority first, and gather into arrays. 0: twice `max_concurrent_jobs`.",
    )
    vanish_after: float = setting(
        60.0, "A job the backend stops reporting for this many seconds fails its tasks with `JobVanishedError`."
    )
    name: str = setting("", "The worker name the scheduler shows.", default_text="generated")
    log_level: str = setting(
        "INFO", "Log level. Logs carry job ids, states and timings, never task data.", choices=_LOG_LEVELS
    )

    def __post_init__(self) -> None:
        if self.client_python is not None and not _PYTHON_TAG.match(self.client_python):
            raise ValueError(
                f"client_python takes major.minor like 3.11 ({where(WorkerSettings, 'client_python')}), "
                f"got {self.client_python!r}"
            )
        check_whole(self, "max_concurrent_jobs", minimum=1)
        check_whole(self, "job_timeout_seconds", minimum=1)
        check_whole(self, "queue_size", minimum=0)
        check_positive(self, "vanish_after")
        if self.array_window is not None and self.array_window < 0:
            raise ValueError(
                f"array_window must be zero or more ({where(WorkerSettings, 'array_window')}), got {self.array_window}"
            )
