"""The local backend's process supervisor: starts job processes up to ``max_parallel`` at once, enforces their
timeouts (SIGTERM, then SIGKILL after a grace, with Batch's reason text), records their pid and exit code in
``jobs/<id>.pid`` and ``jobs/<id>.exit``, follows processes an earlier adapter started by pid, and forgets finished
jobs after a retention period. One thread ticks every :data:`SUPERVISOR_TICK_SECONDS`; every method takes the lock.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import signal
import subprocess
import threading
import time
from typing import IO

from scaler_aws_batch.backends.base import RUNNER_COMMAND, JobState, JobStatus, array_parent_status
from scaler_aws_batch.contracts import StatusReason
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.usage import ComputeKind, JobUsage

logger = logging.getLogger(__name__)

TIMEOUT_REASON = StatusReason.TIMEOUT
SUPERVISOR_TICK_SECONDS = 0.02


@dataclasses.dataclass
class LocalJob:
    job_id: str
    argv: list[str]
    env: dict[str, str]
    timeout_seconds: int
    log_path: pathlib.Path
    state: JobState = JobState.RUNNABLE
    process: subprocess.Popen[bytes] | None = None
    log_handle: IO[bytes] | None = None
    started_at: float = 0.0
    stop_requested_at: float | None = None
    stop_reason: str | None = None
    exit_code: int | None = None
    status_reason: str | None = None
    children: list[str] | None = None  # array parents only
    pid: int | None = None  # a process started by an earlier adapter, followed by pid (no Popen)
    resources: Resources = dataclasses.field(default_factory=Resources)
    #: Wall-clock times (epoch seconds) for the usage log; ``started_at`` above is monotonic, for timeouts.
    created_wall: float = dataclasses.field(default_factory=time.time)
    started_wall: float | None = None
    stopped_wall: float | None = None

    def usage(self) -> JobUsage:
        ran = self.started_wall is not None and self.stopped_wall is not None
        return JobUsage(
            compute=ComputeKind.LOCAL,
            vcpus=float(self.resources.vcpus or 0),
            memory_mib=self.resources.memory_mib or 0,
            gpus=self.resources.gpus or 0,
            attempts=1 if self.process is not None else 0,
            created_at=self.created_wall,
            started_at=self.started_wall,
            stopped_at=self.stopped_wall,
            run_seconds=(self.stopped_wall or 0.0) - (self.started_wall or 0.0) if ran else 0.0,
        )


class ProcessSupervisor:
    def __init__(self, work_dir: pathlib.Path, *, max_parallel: int, kill_grace_seconds: float,
                 retention_seconds: float) -> None:  # fmt: skip
        self._dir = work_dir
        self._max_parallel = max_parallel
        self._kill_grace = kill_grace_seconds
        self._retention = retention_seconds
        # Every job the backend still reports; the supervisor only looks at the runnable and running ones, and
        # finished jobs are forgotten after the retention period (AWS keeps them 7 days), so a long-lived adapter
        # does not grow without bound.
        self._jobs: dict[str, LocalJob] = {}
        self._runnable: collections.deque[str] = collections.deque()
        self._running: dict[str, LocalJob] = {}
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="local-backend", daemon=True)
        self._thread.start()

    def add(self, job_id: str, argv: list[str], base_env: dict[str, str], timeout: int, resources: Resources,
            array_size: int | None) -> None:  # fmt: skip
        """Queue a job (or an array of ``array_size`` children) to run ``argv``."""
        with self._lock:
            if array_size is None:
                self._add(job_id, argv, {**base_env, "AWS_BATCH_JOB_ID": job_id}, timeout, resources)
                return
            children = []
            for index in range(array_size):
                child_id = f"{job_id}:{index}"
                env = {**base_env, "AWS_BATCH_JOB_ID": child_id, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
                self._add(child_id, argv, env, timeout, resources)
                children.append(child_id)
            parent = LocalJob(job_id, [], {}, timeout, self._dir / "logs" / f"{job_id}.log")
            parent.state, parent.children = JobState.PENDING, children
            self._jobs[job_id] = parent

    def statuses(self, job_ids: list[str] | tuple[str, ...]) -> dict[str, JobStatus]:
        with self._lock:
            return {job_id: self._status(self._jobs[job_id]) for job_id in job_ids if job_id in self._jobs}

    def stop(self, job_id: str, reason: str) -> None:
        """Stop a job, or every child of an array."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            targets = [self._jobs[child] for child in job.children] if job.children is not None else [job]
            for target in targets:
                self._stop_job(target, reason)

    def found_state(self, job_id: str, array_size: int | None, timeout: int) -> JobState:
        """The state of a job found in the job records, following it first if this supervisor did not start it."""
        with self._lock:
            if job_id not in self._jobs:
                self._adopt(job_id, array_size, timeout)
            return self._status(self._jobs[job_id]).state

    def _adopt(self, job_id: str, array_size: int | None, timeout: int) -> None:
        """Follow a job an earlier adapter started: by pid while its process lives; a job that never started, or
        whose process ended unseen, is FAILED (its result, if written, is in the store)."""
        ids = [job_id] if array_size is None else [f"{job_id}:{index}" for index in range(array_size)]
        for one_id in ids:
            job = LocalJob(one_id, [], {}, timeout, self._dir / "logs" / f"{one_id}.log")
            exit_path, pid_path = self._dir / "jobs" / f"{one_id}.exit", self._dir / "jobs" / f"{one_id}.pid"
            if exit_path.exists():
                job.exit_code = int(exit_path.read_text() or 1)
                job.state = JobState.SUCCEEDED if job.exit_code == 0 else JobState.FAILED
            elif pid_path.exists() and _runner_alive(pid := int(pid_path.read_text())):
                job.state, job.pid, job.started_at = JobState.RUNNING, pid, time.monotonic()
                self._running[one_id] = job
            else:
                job.state, job.status_reason = JobState.FAILED, "The adapter that ran this job stopped"
            self._jobs[one_id] = job
        if array_size is not None:
            parent = LocalJob(job_id, [], {}, timeout, self._dir / "logs" / f"{job_id}.log")
            parent.state, parent.children = JobState.PENDING, ids
            self._jobs[job_id] = parent

    def close(self, keep_running: bool) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for job in self._running.values():
                if not keep_running and job.process is not None and job.process.poll() is None:
                    self._signal(job, signal.SIGKILL)
                    job.process.wait()
                if job.log_handle is not None:
                    job.log_handle.close()

    def _add(self, job_id: str, argv: list[str], env: dict[str, str], timeout: int, resources: Resources) -> None:
        self._jobs[job_id] = LocalJob(
            job_id, argv, env, timeout, self._dir / "logs" / f"{job_id}.log", resources=resources
        )
        self._runnable.append(job_id)

    def _status(self, job: LocalJob) -> JobStatus:
        if job.children is None:
            return JobStatus(
                job_id=job.job_id,
                state=job.state,
                status_reason=job.status_reason,
                exit_code=job.exit_code,
                attempts=1 if job.state.is_final and job.process is not None else 0,
                log_location=str(job.log_path),
                usage=job.usage() if job.state.is_final else None,
            )
        return array_parent_status(job.job_id, (self._jobs[child].state for child in job.children))

    def _signal(self, job: LocalJob, signum: signal.Signals) -> None:
        pid = job.process.pid if job.process is not None else job.pid
        assert pid is not None
        try:
            os.killpg(pid, signum)  # the job runs in its own session: its group id is its pid
        except ProcessLookupError:
            return

    def _stop_job(self, job: LocalJob, reason: str) -> None:
        if job.state.is_final:
            return
        if job.process is None and job.pid is None:
            job.state, job.status_reason = JobState.FAILED, reason
            self._finished.append((time.monotonic(), job.job_id))
            logger.info("local job %s cancelled before it started", job.job_id)
            return
        if job.stop_requested_at is None:
            job.stop_requested_at, job.stop_reason = time.monotonic(), reason
            self._signal(job, signal.SIGTERM)
            logger.info("local job %s terminating: %s", job.job_id, reason)

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISOR_TICK_SECONDS):
            with self._lock:
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        for job in list(self._running.values()):
            if job.process is None:  # adopted: followed by pid; its exit code is unknown
                if not _runner_alive(job.pid):
                    del self._running[job.job_id]
                    job.state = JobState.FAILED
                    job.status_reason = job.stop_reason or "The job's process ended; its exit code is unknown"
                    self._finished.append((now, job.job_id))
                    continue
                code = None
            else:
                code = job.process.poll()
            if code is not None:
                del self._running[job.job_id]
                self._finish(job, code)
                self._finished.append((now, job.job_id))
            elif job.stop_requested_at is None and now - job.started_at > job.timeout_seconds:
                self._stop_job(job, TIMEOUT_REASON)
            elif job.stop_requested_at is not None and now - job.stop_requested_at > self._kill_grace:
                self._signal(job, signal.SIGKILL)
        while self._runnable and len(self._running) < self._max_parallel:
            job = self._jobs[self._runnable.popleft()]
            if job.state is JobState.RUNNABLE:  # not cancelled while it waited
                self._start(job)
                if job.process is not None:
                    self._running[job.job_id] = job
                else:
                    self._finished.append((now, job.job_id))
        while self._finished and now - self._finished[0][0] > self._retention:
            self._forget(self._finished.popleft()[1])

    def _forget(self, job_id: str) -> None:
        parent_id, _, index = job_id.rpartition(":")
        parent = self._jobs.get(parent_id) if index else None
        if parent is None or not parent.children:
            self._jobs.pop(job_id, None)
            return
        # Children go together with their array, once all are final: the parent's summary counts every child.
        if all(self._jobs[child].state.is_final for child in parent.children if child in self._jobs):
            for child in parent.children:
                self._jobs.pop(child, None)
            del self._jobs[parent_id]

    def _start(self, job: LocalJob) -> None:
        job.log_handle = job.log_path.open("ab")
        try:
            job.process = subprocess.Popen(
                job.argv, stdout=job.log_handle, stderr=subprocess.STDOUT, env=job.env, start_new_session=True
            )
        except OSError as exc:
            job.state, job.status_reason = JobState.FAILED, f"CannotStartContainerError: {exc}"
            job.log_handle.close()
            return
        job.state, job.started_at, job.started_wall = JobState.RUNNING, time.monotonic(), time.time()
        (self._dir / "jobs" / f"{job.job_id}.pid").write_text(str(job.process.pid))
        logger.debug("local job %s RUNNING as pid %d", job.job_id, job.process.pid)

    def _finish(self, job: LocalJob, code: int) -> None:
        if job.log_handle is not None:
            job.log_handle.close()
            job.log_handle = None
        # A signal death reports like Docker does: 128 + signal number.
        job.exit_code = code if code >= 0 else 128 - code
        if job.process is not None:
            (self._dir / "jobs" / f"{job.job_id}.exit").write_text(str(job.exit_code))
        job.stopped_wall = time.time()
        if code == 0 and job.stop_reason != TIMEOUT_REASON:
            job.state = JobState.SUCCEEDED
        else:
            job.state = JobState.FAILED
            job.status_reason = job.stop_reason or StatusReason.ESSENTIAL_CONTAINER_EXITED
        logger.info(
            "local job %s %s (exit %d) after %.2fs",
            job.job_id,
            job.state.value,
            job.exit_code,
            time.monotonic() - job.started_at,
        )


def _runner_alive(pid: int | None) -> bool:
    """Is ``pid`` a live (not zombie) job process? A reused pid of another program does not count."""
    if pid is None:
        return False
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z" and RUNNER_COMMAND[1].encode() in cmdline
