"""The embedded default backend: each job runs the runner as a local process, with bounded concurrency.

It mirrors AWS Batch where the shared code can tell: the same runner command with ``Ref::payload`` substituted,
the same ``AWS_BATCH_JOB_*`` variables, array children ``<parent>:<index>``, SIGTERM then SIGKILL on timeout with
Batch's reason text, and the same container-overrides measure. Each job's output goes to ``logs/<job id>.log`` and
its spec (without the payload, with its task ids) to ``jobs/<job id>.json`` under the work directory; a started job
(or array child) leaves ``jobs/<id>.pid``, and its exit code in ``jobs/<id>.exit``. Job processes run in their own
session, so they outlive an adapter killed with ``kill -9``; the next adapter on the same work directory finds them
through these files (:meth:`LocalProcessBackend.find_jobs`), follows them by pid and can stop them.
"""

from __future__ import annotations

import logging
import os
import pathlib
import uuid
from collections.abc import Mapping, Sequence

from scaler_aws_batch.backends.base import (
    RUNNER_COMMAND,
    JobBackend,
    JobSpec,
    JobState,
    JobStatus,
    ListedJob,
    runner_argv,
    runner_overrides_length,
    tail_lines,
)
from scaler_aws_batch.backends.job_records import read_job_records, write_job_record
from scaler_aws_batch.backends.local.supervisor import TIMEOUT_REASON, ProcessSupervisor
from scaler_aws_batch.usage import ComputeKind

__all__ = ["TIMEOUT_REASON", "LocalProcessBackend"]

logger = logging.getLogger(__name__)


class LocalProcessBackend(JobBackend):
    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        max_parallel: int | None = None,
        job_env: Mapping[str, str] | None = None,
        command: Sequence[str] = RUNNER_COMMAND,
        kill_grace_seconds: float = 5.0,
        retention_seconds: float = 600.0,
        keep_running_on_close: bool = False,
    ) -> None:
        self._dir = pathlib.Path(work_dir)
        (self._dir / "logs").mkdir(parents=True, exist_ok=True)
        (self._dir / "jobs").mkdir(parents=True, exist_ok=True)
        max_parallel = max_parallel or os.cpu_count() or 2
        if max_parallel <= 0:
            raise ValueError(f"max_parallel must be positive, got {max_parallel}")
        self._job_env = dict(job_env or {})
        self._command = tuple(command)
        #: close() leaves job processes running (for a later adapter to re-attach) instead of killing them.
        self.keep_running_on_close = keep_running_on_close
        self._processes = ProcessSupervisor(self._dir, max_parallel=max_parallel,
                                            kill_grace_seconds=kill_grace_seconds,
                                            retention_seconds=retention_seconds)  # fmt: skip

    @property
    def name(self) -> str:
        return "local"

    def submit(self, spec: JobSpec) -> str:
        job_id = str(uuid.uuid4())
        argv = runner_argv(spec, self._command)
        write_job_record(self._dir / "jobs", job_id, spec)
        base_env = {**os.environ, **self._job_env, "AWS_BATCH_JOB_ATTEMPT": "1"}
        self._processes.add(job_id, argv, base_env, spec.timeout_seconds, spec.resources, spec.array_size)
        logger.info("local job %s (%s) submitted, array size %s", job_id, spec.name, spec.array_size or "-")
        return job_id

    def describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if len(job_ids) > self.max_describe_batch:
            raise ValueError(f"describe takes at most {self.max_describe_batch} ids, got {len(job_ids)}")
        return self._processes.statuses(list(job_ids))

    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        del state  # the local backend always knows the current state
        self._processes.stop(job_id, reason)

    def find_jobs(self, name_prefix: str, queues: Sequence[str | None]) -> list[ListedJob]:
        del queues  # one local queue
        found: list[ListedJob] = []
        for record in read_job_records(self._dir / "jobs", name_prefix):
            state = self._processes.found_state(record.job_id, record.array_size, record.timeout_seconds)
            found.append(
                ListedJob(record.job_id, record.name, state, record.array_size, task_ids=record.task_ids or None)
            )
        return found

    def overrides_length(self, spec: JobSpec) -> int:
        return runner_overrides_length(spec, self._command)

    def log_tail(self, job_id: str, lines: int) -> list[str]:
        return tail_lines(self._dir / "logs" / f"{job_id}.log", lines)

    def close(self) -> None:
        self._processes.close(self.keep_running_on_close)

    def compute_kind(self, compute_environment: str | None) -> ComputeKind:
        return ComputeKind.LOCAL
