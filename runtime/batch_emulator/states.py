"""The AWS Batch job state machine: SUBMITTED -> PENDING -> RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED.

Array parents fan out into children at PENDING and finish when every child has; retries go back to RUNNABLE;
cancel, terminate, timeouts and Spot reclaims end attempts. Every method is called with the engine's lock held
(from request threads, the clock's thread, or a runner thread reporting an exit).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import TYPE_CHECKING, Protocol

from batch_emulator import faults as fault_effects
from batch_emulator import rules
from batch_emulator.clock import Clock
from batch_emulator.config import EmulatorConfig, Faults
from batch_emulator.model import (
    EARLY,
    FAILED,
    PENDING,
    RUNNABLE,
    RUNNING,
    STARTING,
    SUBMITTED,
    SUCCEEDED,
    TERMINAL,
    Attempt,
    Job,
    now_ms,
)
from batch_emulator.render import job_arn
from scaler_aws_batch.contracts import StatusReason

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Executor(Protocol):
    """Runs an attempt somewhere and reports its exit to `JobStates.attempt_exited`."""

    def start(self, job: Job, attempt: Attempt) -> None: ...
    def exited(self, attempt: Attempt) -> bool: ...
    def kill(self, attempt: Attempt, hard: bool) -> None: ...


class JobStates:
    """Every job and its transitions; timed transitions go through the clock."""

    def __init__(
        self, config: EmulatorConfig, faults: Faults, lock: threading.RLock, clock: Clock, s3: S3Client
    ) -> None:
        self.config = config
        self.faults = faults
        self.lock = lock
        self.clock = clock
        self._s3 = s3
        self.executor: Executor | None = None
        self.jobs: dict[str, Job] = {}
        self.order: list[Job] = []  # top-level jobs (non-array and parents) in submit order
        self._ready: deque[Job] = deque()
        self._running = 0
        self.stopping = False

    def _executor(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("JobStates has no executor")
        return self.executor

    def add(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        self.order.append(job)
        self.clock.schedule(self.config.delay_submitted, lambda: self._to_pending(job))

    def _set_status(self, job: Job, status: str) -> None:
        job.status = status
        if job.parent is not None:
            job.parent.summary_updated_at = now_ms()

    def _to_pending(self, job: Job) -> None:
        if job.status != SUBMITTED:
            return
        self._set_status(job, PENDING)
        if job.is_parent:
            assert job.array_size is not None
            created = now_ms()
            for index in range(job.array_size):
                child_id = f"{job.job_id}:{index}"
                child = Job(
                    job_id=child_id,
                    job_arn=job_arn(self.config.region, self.config.account_id, child_id),
                    name=job.name,
                    queue_arn=job.queue_arn,
                    queue_name=job.queue_name,
                    ce_name=job.ce_name,
                    ecs_cluster=job.ecs_cluster,
                    platform_capabilities=job.platform_capabilities,
                    job_def_arn=job.job_def_arn,
                    job_def_name=job.job_def_name,
                    container_properties=job.container_properties,
                    parameters=job.parameters,
                    command=job.command,
                    environment=job.environment,
                    resource_requirements=job.resource_requirements,
                    overrides_length=job.overrides_length,
                    timeout_seconds=job.timeout_seconds,
                    retry_strategy=job.retry_strategy,
                    tags=job.tags,
                    propagate_tags=job.propagate_tags,
                    log_group=job.log_group,
                    log_stream_prefix=job.log_stream_prefix,
                    created_at=created,
                    array_index=index,
                    parent=job,
                )
                job.children.append(child)
                self.jobs[child_id] = child
                self.clock.schedule(self.config.delay_submitted, lambda c=child: self._to_pending(c))  # type: ignore[misc]
            job.summary_updated_at = created
            return
        self.clock.schedule(self.config.delay_pending, lambda: self._to_runnable(job))

    def _to_runnable(self, job: Job) -> None:
        if job.status != PENDING:
            return
        self._set_status(job, RUNNABLE)
        self.clock.schedule(self.config.delay_runnable, lambda: self._make_ready(job))

    def _make_ready(self, job: Job) -> None:
        if job.status != RUNNABLE:
            return
        self._ready.append(job)
        self._dispatch()

    def dispatch(self) -> None:
        """Start ready jobs now (after ``max_running_jobs`` was raised). Call with the lock held."""
        self._dispatch()

    def _dispatch(self) -> None:
        while self._ready and self._running < self.config.max_running_jobs and not self.stopping:
            job = self._ready.popleft()
            if job.status != RUNNABLE:
                continue
            if job.overrides_length > rules.CONTAINER_OVERRIDES_MAX_CHARS:
                self._finalize(job, FAILED, rules.MSG_OVERRIDES_TOO_LONG)
                continue
            number = len(job.attempts) + 1
            task_id = uuid.uuid4().hex
            attempt = Attempt(number=number, task_id=task_id, log_stream=f"{job.log_stream_prefix}/default/{task_id}")
            job.current = attempt
            self._running += 1
            self._set_status(job, STARTING)
            self.clock.schedule(self.config.delay_starting, lambda j=job, a=attempt: self._to_running(j, a))  # type: ignore[misc]

    def _to_running(self, job: Job, attempt: Attempt) -> None:
        if job.status != STARTING or job.current is not attempt:
            return
        attempt.started_at = now_ms()
        job.started_at = attempt.started_at
        if job.parent is not None and job.parent.started_at is None:
            job.parent.started_at = attempt.started_at
        self._set_status(job, RUNNING)
        self._executor().start(job, attempt)
        if job.timeout_seconds is not None:
            if self.config.timeout_override_seconds is not None:
                seconds = self.config.timeout_override_seconds
            else:
                seconds = job.timeout_seconds * self.config.time_scale
            self.clock.schedule(seconds, lambda: self._kill_attempt(job, attempt, "timeout", rules.MSG_TIMEOUT))
        if fault_effects.spot_reclaimed(self.faults, job, attempt):
            self.clock.schedule(
                self.faults.spot_reclaim_after_seconds,
                lambda: self._kill_attempt(job, attempt, "spot", _spot_message(job)),
            )

    def _kill_attempt(self, job: Job, attempt: Attempt, cause: str, reason: str) -> None:
        if job.current is not attempt or attempt.finished or attempt.kill_cause is not None:
            return
        executor = self._executor()
        if executor.exited(attempt):
            return  # it already exited on its own: its own outcome stands
        attempt.kill_cause = cause
        attempt.kill_reason = reason
        executor.kill(attempt, hard=cause == "spot")

    def cancel(self, job: Job, reason: str) -> None:
        if job.is_parent:
            if job.status == SUBMITTED:
                job.is_cancelled = True
                self._finalize(job, FAILED, reason)
                return
            if job.status in TERMINAL:
                return
            job.is_cancelled = True
            job.stop_reason = reason
            for child in job.children:
                if child.status in EARLY:
                    child.is_cancelled = True
                    self._finalize(child, FAILED, reason)
            return
        if job.status in EARLY:
            job.is_cancelled = True
            self._finalize(job, FAILED, reason)

    def terminate(self, job: Job, reason: str) -> None:
        if job.is_parent:
            if job.status == SUBMITTED:
                job.is_terminated = True
                self._finalize(job, FAILED, reason)
                return
            if job.status in TERMINAL:
                return
            job.is_terminated = True
            job.stop_reason = reason
            for child in job.children:
                self.terminate(child, reason)
            return
        if job.status in EARLY:
            job.is_terminated = True
            self._finalize(job, FAILED, reason)
        elif job.status in (STARTING, RUNNING) and job.current is not None:
            job.is_terminated = True
            attempt = job.current
            self.clock.schedule(self.config.terminate_delay_seconds, lambda: self._terminate_now(job, attempt, reason))

    def _terminate_now(self, job: Job, attempt: Attempt, reason: str) -> None:
        if job.current is not attempt or attempt.finished:
            return
        if job.status == STARTING:
            attempt.finished = True
            job.current = None
            self._running -= 1
            self._finalize(job, FAILED, reason)
            self._dispatch()
            return
        self._kill_attempt(job, attempt, "terminate", reason)

    def _finalize(self, job: Job, status: str, reason: str | None) -> None:
        if job.status in TERMINAL:
            return
        self._set_status(job, status)
        job.status_reason = reason
        job.stopped_at = now_ms()
        parent = job.parent
        if parent is not None:
            parent.children_done += 1
            if status == FAILED:
                parent.children_failed += 1
            if parent.children_done == parent.array_size and parent.status not in TERMINAL:
                parent.status = FAILED if parent.children_failed else SUCCEEDED
                parent.status_reason = parent.stop_reason if parent.children_failed else None
                parent.stopped_at = job.stopped_at

    def attempt_exited(
        self, job: Job, attempt: Attempt, returncode: int | None, start_error: str | None, env: dict[str, str]
    ) -> None:
        """Called by the executor's runner thread (without the lock) when an attempt has ended."""
        with self.lock:
            succeeded = start_error is None and returncode == 0 and attempt.kill_cause is None
        if succeeded and not self.stopping:
            fault_effects.run_success_hooks(self.faults, self._s3, job, attempt, env)
        with self.lock:
            self._attempt_ended(job, attempt, returncode, start_error)

    def _attempt_ended(self, job: Job, attempt: Attempt, returncode: int | None, start_error: str | None) -> None:
        attempt.finished = True
        attempt.stopped_at = now_ms()
        attempt.proc = None
        job.current = None
        job.attempts.append(attempt)
        self._running -= 1
        cause = attempt.kill_cause
        if cause == "spot":
            attempt.status_reason = _spot_message(job)
        else:
            if returncode is not None:
                attempt.exit_code = 128 - returncode if returncode < 0 else returncode
            if start_error is not None:
                attempt.reason = start_error
                attempt.status_reason = "Task failed to start"
            elif cause is not None:
                attempt.status_reason = attempt.kill_reason
            elif attempt.exit_code != 0:
                attempt.status_reason = rules.MSG_ESSENTIAL_EXITED
        if cause is None and start_error is None and attempt.exit_code == 0:
            self._finalize(job, SUCCEEDED, StatusReason.ESSENTIAL_CONTAINER_EXITED)
        elif cause in ("timeout", "terminate"):
            self._finalize(job, FAILED, attempt.status_reason)
        elif not self.stopping and rules.should_retry(
            job.retry_strategy, attempt.number, attempt.status_reason, attempt.reason, attempt.exit_code
        ):
            job.status_reason = attempt.status_reason
            self._set_status(job, RUNNABLE)
            self.clock.schedule(self.config.delay_runnable, lambda: self._make_ready(job))
        else:
            self._finalize(job, FAILED, attempt.status_reason)
        self._dispatch()


def _spot_message(job: Job) -> str:
    """The status reason of lost Spot capacity: EC2's reclaimed host, or Fargate Spot's interrupted task."""
    top = job.parent or job
    return rules.MSG_FARGATE_SPOT if top.extra.get("platform") == rules.FARGATE else rules.MSG_SPOT
