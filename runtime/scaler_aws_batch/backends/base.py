"""The small interface every job backend implements.

A backend only submits job specs, describes job ids and cancels a job id (plus reading a job's last log lines).
Everything else (payloads, results, errors, deadlines, array packing, bookkeeping) lives in the shared code in
:mod:`scaler_aws_batch.engine`, so a new backend (Slurm, Kubernetes) is a small class.

All methods are blocking: the shared reconcile loop calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import os
import pathlib
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence

from scaler_aws_batch.contracts import PAYLOAD_PARAMETER, RUNNER_COMMAND
from scaler_aws_batch.limits import container_overrides_length, render_command
from scaler_aws_batch.resources import ComputeCapacity, Resources, resource_requirements
from scaler_aws_batch.usage import ComputeKind, JobUsage

__all__ = ["PAYLOAD_PARAMETER", "RUNNER_COMMAND"]  # re-exported: backends import them from here


class JobState(enum.Enum):
    """AWS Batch's job states, used by every backend."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)

    @property
    def is_cancellable(self) -> bool:
        """States in which CancelJob acts; later states need TerminateJob."""
        return self in (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNABLE)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One job to submit: a single job, or an array job when ``array_size`` is set (2..10,000)."""

    name: str
    payload: str  # the value substituted for Ref::payload
    resources: Resources
    timeout_seconds: int
    tags: Mapping[str, str]
    array_size: int | None = None
    queue: str | None = None  # None: the backend's default queue
    #: The task ids in array-index order (the payload carries them too); backends may record them for re-attach.
    task_ids: tuple[str, ...] = ()


def runner_argv(spec: JobSpec, command: Sequence[str] = RUNNER_COMMAND) -> list[str]:
    """The job command with the payload substituted, ``scaler-batch`` found next to this interpreter first (as a
    job image would have it on PATH); for backends that run the runner on this machine or a shared filesystem."""
    argv = render_command(command, {PAYLOAD_PARAMETER: spec.payload})
    search_path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which(argv[0], path=search_path)
    if found:
        return [found, *argv[1:]]
    if argv[0] == RUNNER_COMMAND[0]:
        return [sys.executable, "-m", "scaler_aws_batch", *argv[1:]]
    raise FileNotFoundError(f"job command {argv[0]!r} is not on PATH")


def runner_overrides_length(spec: JobSpec, command: Sequence[str] = RUNNER_COMMAND) -> int:
    """AWS's container-overrides measure of ``spec``, so that backends without the limit plan payloads alike."""
    rendered = render_command(command, {PAYLOAD_PARAMETER: spec.payload})
    return container_overrides_length(rendered, None, resource_requirements(spec.resources))


def tail_lines(path: pathlib.Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a job's log file; none when it does not exist (yet)."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """What a describe returns for one job id."""

    job_id: str
    state: JobState
    status_reason: str | None = None
    exit_code: int | None = None
    attempts: int = 0
    #: Array parents only: how many children are in each state (AWS's ``arrayProperties.statusSummary``).
    array_summary: Mapping[JobState, int] | None = None
    #: Where the backend keeps this job's log, for operators (e.g. a CloudWatch stream name or a file path).
    log_location: str | None = None
    #: Attempts that ended because EC2 reclaimed the Spot host.
    spot_reclaims: int = 0
    #: What the job used and where it ran (for the usage log); None when the backend does not say.
    usage: JobUsage | None = None


def array_parent_status(job_id: str, children: Iterable[JobState]) -> JobStatus:
    """An array parent as AWS reports it: PENDING until every child is final, then FAILED if any child failed."""
    summary = {state: 0 for state in JobState}
    for state in children:
        summary[state] += 1
    done = summary[JobState.SUCCEEDED] + summary[JobState.FAILED]
    if done < sum(summary.values()):
        return JobStatus(job_id=job_id, state=JobState.PENDING, array_summary=summary)
    final = JobState.FAILED if summary[JobState.FAILED] else JobState.SUCCEEDED
    return JobStatus(job_id=job_id, state=final, array_summary=summary)


@dataclasses.dataclass(frozen=True)
class ListedJob:
    """A job found by name: enough to learn its tasks, from ``task_ids`` or from its ``payload`` parameter."""

    job_id: str
    name: str
    state: JobState
    array_size: int | None
    task_ids: tuple[str, ...] | None = None
    payload: str | None = None


class JobBackend(abc.ABC):
    """Submit, describe, cancel. Job ids of array children are ``f"{parent_id}:{index}"`` on every backend."""

    #: How many ids one describe call may carry (AWS: 100).
    max_describe_batch: int = 100
    #: The shortest job timeout the backend accepts (AWS: 60 s); a task asking for less is refused.
    min_timeout_seconds: int = 1
    #: How error messages name the queue a job goes to when the task picks none.
    default_queue_name: str = "the default queue"
    #: Jobs :meth:`cancel` can stop per second, sustained (the shutdown bound is derived from it; AWS: 10).
    stop_jobs_per_second: float = 20.0

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short backend name for logs and the demo summary, e.g. ``local`` or ``aws-batch``."""

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Submit one job (or array job) and return its id. Raise :class:`BackendError` subclasses on failure."""

    @abc.abstractmethod
    def describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Describe at most ``max_describe_batch`` ids. Unknown ids are left out, as AWS does."""

    @abc.abstractmethod
    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        """Stop a job: cancel it while queued, terminate it once started. ``state`` is the last state seen."""

    @abc.abstractmethod
    def overrides_length(self, spec: JobSpec) -> int:
        """Characters the container overrides of ``spec`` take once ``Ref::`` parameters are substituted.

        AWS fails a job at start when this exceeds 8,192 (see docs/aws-limits.md); the shared code uses it to decide
        whether a payload can travel inline. Backends that have no such limit still report the same figure so
        that both paths behave alike.
        """

    def check_ready(self, queues: Sequence[str]) -> None:
        """Before the worker takes a task: raise :class:`BackendError` saying what to fix if the backend or one of
        ``queues`` (the routing queues besides the default one) cannot run jobs. Backends with nothing to check
        return."""
        del queues

    def explain_runnable(self, queue: str | None, resources: Resources) -> str:
        """Why a job asking for ``resources`` may wait in RUNNABLE on ``queue`` (None: the default): the queue's
        status reason and a diagnosis, for the log. Backends without queues return ''."""
        del queue, resources
        return ""

    def capacity(self, queue: str | None) -> ComputeCapacity | None:
        """The largest job ``queue`` (None: the default queue) can ever run, or None when unknown or unbounded.
        Read once and cached by backends that ask their provider."""
        del queue
        return None

    def find_jobs(self, name_prefix: str, queues: Sequence[str | None]) -> list[ListedJob]:
        """Every job the backend still reports whose name starts with ``name_prefix`` (``None`` in ``queues`` is the
        default queue). A restarted adapter takes stock of its jobs with this; backends that cannot search their
        jobs report none."""
        del name_prefix, queues
        return []

    def compute_kind(self, compute_environment: str | None) -> ComputeKind:
        """How a job that ran in ``compute_environment`` (as its runner reports it) is billed, for the usage log."""
        return ComputeKind.UNKNOWN

    def log_tail(self, job_id: str, lines: int) -> list[str]:
        """The job's last log lines, for error messages. Backends without logs return nothing."""
        del job_id, lines
        return []

    def close(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing to release
        """Release clients, threads or processes. Jobs already submitted keep running."""
