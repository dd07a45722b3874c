"""Settings of ``scaler-batch worker`` that every backend shares (the ``[worker]`` table of the config file)."""

from __future__ import annotations

import dataclasses
import re

from scaler_aws_batch import defaults
from scaler_aws_batch.config import Settings, check_positive, check_whole, setting, where
from scaler_aws_batch.contracts import SPOT_RECLAIMS_BEFORE_ON_DEMAND
from scaler_aws_batch.limits import MAX_ARRAY_SIZE
from scaler_aws_batch.tags import check_user_tags, parse_tag_pairs

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
        MAX_ARRAY_SIZE,
        "Tasks in flight at once (each task is one job or one array child). Tasks beyond it wait in the adapter, "
        "highest Scaler priority first. The default, one full array, lets a large `map` become a few large arrays; "
        "jobs beyond the compute environment's capacity wait in RUNNABLE at no cost.",
    )
    job_timeout_seconds: int = setting(
        defaults.JOB_TIMEOUT_SECONDS,
        "Seconds per job attempt, unless a task asks for its own with the `timeout` capability. AWS requires at "
        "least 60.",
        long="--job-timeout",
    )
    array_window: float | None = setting(
        None,
        "Seconds tasks are gathered before being submitted together as one array job: each new task extends the "
        "window, and the first task waits at most 2 s, a bound that doubles (up to 10 s) while a stream of tasks "
        "lasts, so that a large `map` becomes a few large arrays.",
        default_text="0.02 local, 0.5 AWS, 0.5 Slurm",
    )
    describe_interval: float | None = setting(
        None,
        "The longest time between two describe calls (DescribeJobs on AWS) while jobs run. Results are found by "
        "listing the store every round, without a Batch call; describe calls report what results cannot: jobs that "
        "failed without a result (timeouts, out of memory, crashes), RUNNABLE jobs, and usage. They start at the "
        "backend's poll interval when jobs start and back off to this bound.",
        default_text="0.5 local, 10 AWS, 5 Slurm",
    )
    queue_size: int = setting(
        0,
        "How many tasks the scheduler may hand this adapter at once; those beyond the running ones wait here, "
        "highest priority first, and gather into arrays. 0: twice `max_concurrent_jobs`.",
    )
    vanish_after: float = setting(
        defaults.VANISH_BOUND_SECONDS,
        "A job that the backend's describe calls *answer without* for this many seconds fails its tasks with "
        "`JobVanishedError` and is asked to stop. Failed calls (throttling, 5xx, expired credentials) pause this "
        "clock.",
    )
    name: str = setting(
        "", "The worker name the scheduler shows; also part of the default `adapter_id`.", default_text="generated"
    )
    adapter_id: str | None = setting(
        None,
        "Names (`scaler-<id>-...`) and tags (`scaler-batch:adapter-id`) every job, so that the adapter restarted with "
        "the same id finds its jobs in the backend alone (docs/reliability.md). Default: the first 12 hex digits of "
        "the SHA-256 of the scheduler address, the backend, its job queue (AWS) or work directory (local), and "
        "`name`: stable across restarts of one deployment. Adapters started the same way at once take distinct ids "
        "(the next free one, see `lease_seconds`); an explicit id that a live adapter holds is refused.",
        default_text="derived",
    )
    reattach_grace: float = setting(
        defaults.REATTACH_GRACE_SECONDS,
        "After a (re)start or a scheduler restart, how many seconds a job found running waits for Scaler to send its "
        "task again; then it is stopped. Keep it above the scheduler's worker timeout (Scaler: 60 s).",
    )
    restart_grace: float = setting(
        defaults.RESTART_GRACE_SECONDS,
        "Once the scheduler's or the object storage server's process is known to have ended (it closed the "
        "connection, or its port refuses connections), how many seconds the jobs kept for the lost tasks wait before "
        "they are stopped: Scaler keeps tasks and their inputs in memory, so they will never be sent again "
        "(docs/reliability.md). Raise it above the scheduler's worker timeout when a proxy between them may close "
        "connections.",
    )
    submit_deadline: float = setting(
        defaults.SUBMIT_DEADLINE_SECONDS,
        "Seconds a submission is retried (with backoff) through throttling, server errors and expired credentials "
        "before its tasks fail with `SubmitError`.",
    )
    shutdown_timeout: float = setting(
        60.0,
        "On SIGTERM/SIGINT, the bound in seconds on letting submissions settle and stopping every live job (arrays "
        "first; on AWS 10 jobs per second: N jobs take up to N/10 + 10 s, logged at shutdown). Jobs not stopped by "
        "then are handed over to the next adapter with the same id, and the adapter exits 1 (docs/reliability.md).",
    )
    keep_jobs_on_exit: bool = setting(
        False,
        "On SIGTERM/SIGINT, leave the jobs running (rolling restart): the next adapter with the same `adapter_id` "
        "re-attaches to them. Start it once this one has exited (its lease is released then): while this one runs, "
        "an adapter started the same way takes another id, and one with the same explicit id is refused.",
    )
    lease_seconds: float = setting(
        30.0,
        "Time to live of the adapter id's lease in the store (`leases/<id>`), renewed every third of it. An adapter "
        "whose lease went unrenewed this long (or whose pid is gone, on the same host) is dead: the next one takes "
        "its id and jobs over. A live holder makes an adapter with the default id take the next free id, and one "
        "with an explicit `adapter_id` refuse to start.",
    )
    runnable_warn_after: float = setting(
        defaults.RUNNABLE_WARN_SECONDS,
        "A job waiting in RUNNABLE this many seconds is logged once, with its queue's status reason and a diagnosis.",
    )
    spot_reclaims_before_on_demand: int = setting(
        SPOT_RECLAIMS_BEFORE_ON_DEMAND,
        "Spot reclaims of a task (over all its attempts) after which it goes to the On-Demand queue instead of "
        "failing, when the backend has one.",
    )
    log_level: str = setting(
        "INFO", "Log level. Logs carry job ids, states and timings, never task data.", choices=_LOG_LEVELS
    )
    usage_log: str | None = setting(
        None,
        "Append one JSON line per finished job (task ids, queue, compute kind, resources, attempts, times, outcome) "
        "to this file; see docs/usage-and-cost.md. The one-line usage summary is logged at exit either way.",
        metavar="FILE",
    )
    tags: tuple[str, ...] = setting(
        (),
        "A user tag `KEY=VALUE` on every job (repeatable), next to the stack's `job_tags` and the adapter's own; "
        "together at most 46 user tags (Batch allows 50 per job), checked at start-up.",
        long="--tag",
        metavar="KEY=VALUE",
    )

    def __post_init__(self) -> None:
        if self.client_python is not None and not _PYTHON_TAG.match(self.client_python):
            raise ValueError(
                f"client_python takes major.minor like 3.11 ({where(WorkerSettings, 'client_python')}), "
                f"got {self.client_python!r}"
            )
        check_user_tags(parse_tag_pairs(self.tags), source=where(WorkerSettings, "tags"))
        check_whole(self, "max_concurrent_jobs", minimum=1)
        check_whole(self, "job_timeout_seconds", minimum=1)
        check_whole(self, "queue_size", minimum=0)
        check_positive(self, "vanish_after")
        check_positive(self, "runnable_warn_after")
        if self.lease_seconds < 3:
            raise ValueError(f"lease_seconds takes 3 or more ({where(WorkerSettings, 'lease_seconds')})")
        check_whole(self, "spot_reclaims_before_on_demand", minimum=1)
        for name in ("reattach_grace", "restart_grace", "submit_deadline", "shutdown_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} takes seconds, zero or more ({where(WorkerSettings, name)})")
        if self.adapter_id is not None and not (
            self.adapter_id.replace("-", "").isalnum() and len(self.adapter_id) <= 40
        ):
            raise ValueError(
                f"adapter_id takes 1-40 letters, digits or '-' ({where(WorkerSettings, 'adapter_id')}), "
                f"got {self.adapter_id!r}"
            )
        if self.describe_interval is not None and self.describe_interval <= 0:
            raise ValueError(
                f"describe_interval must be positive ({where(WorkerSettings, 'describe_interval')}), "
                f"got {self.describe_interval}"
            )
        if self.array_window is not None and self.array_window < 0:
            raise ValueError(
                f"array_window must be zero or more ({where(WorkerSettings, 'array_window')}), got {self.array_window}"
            )
