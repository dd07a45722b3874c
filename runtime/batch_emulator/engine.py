"""The job engine: AWS Batch job state machine, local job processes, logs, retries, timeouts, arrays.

All job state lives in `Engine` under one re-entrant lock. A single scheduler thread fires timed events (state
delays, timeouts, kills); each running attempt has one runner thread that starts the process, pumps its output to
CloudWatch Logs (in moto) and reports the exit. Queues and job definitions are read from moto over HTTP.
"""

from __future__ import annotations

import contextlib
import fnmatch
import heapq
import itertools
import logging
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from batch_emulator import rules
from batch_emulator.config import EmulatorConfig, Faults, JobInfo
from batch_emulator.rules import client_error

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_s3 import S3Client

LOG = logging.getLogger("batch_emulator")

SUBMITTED = "SUBMITTED"
PENDING = "PENDING"
RUNNABLE = "RUNNABLE"
STARTING = "STARTING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STATUSES = (SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED)
TERMINAL = frozenset({SUCCEEDED, FAILED})
EARLY = frozenset({SUBMITTED, PENDING, RUNNABLE})

_LOOKUP_TTL_SECONDS = 2.0
_LOG_CHUNK_EVENTS = 1000
_LOG_CHUNK_BYTES = 512 * 1024


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Attempt:
    number: int
    task_id: str
    log_stream: str
    started_at: int | None = None
    stopped_at: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    status_reason: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    kill_cause: str | None = None  # "timeout" | "terminate" | "spot"
    kill_reason: str | None = None
    finished: bool = False

    def describe(self, account_id: str, region: str) -> dict[str, Any]:
        container: dict[str, Any] = {
            "taskArn": f"arn:aws:ecs:{region}:{account_id}:task/emulator/{self.task_id}",
            "containerInstanceArn": f"arn:aws:ecs:{region}:{account_id}:container-instance/emulator/{self.task_id}",
            "logStreamName": self.log_stream,
            "networkInterfaces": [],
        }
        if self.exit_code is not None:
            container["exitCode"] = self.exit_code
        if self.reason is not None:
            container["reason"] = self.reason
        out: dict[str, Any] = {"container": container}
        if self.started_at is not None:
            out["startedAt"] = self.started_at
        if self.stopped_at is not None:
            out["stoppedAt"] = self.stopped_at
        if self.status_reason is not None:
            out["statusReason"] = self.status_reason
        return out


@dataclass
class Job:
    job_id: str
    job_arn: str
    name: str
    queue_arn: str
    queue_name: str
    ce_name: str
    job_def_arn: str
    job_def_name: str
    container_properties: dict[str, Any]
    parameters: dict[str, str]
    command: list[str]
    environment: list[dict[str, str]]
    resource_requirements: list[dict[str, str]]
    overrides_length: int
    timeout_seconds: int | None
    retry_strategy: dict[str, Any] | None
    tags: dict[str, str]
    propagate_tags: bool
    log_group: str
    log_stream_prefix: str
    created_at: int
    array_size: int | None = None
    array_index: int | None = None
    parent: Job | None = None
    children: list[Job] = field(default_factory=list)
    children_done: int = 0
    children_failed: int = 0
    status: str = SUBMITTED
    status_reason: str | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    current: Attempt | None = None
    is_cancelled: bool = False
    is_terminated: bool = False
    stop_reason: str | None = None
    summary_updated_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_parent(self) -> bool:
        return self.array_size is not None


class Engine:
    """Owns every job; thread-safe; all public methods may be called from request threads."""

    def __init__(
        self,
        config: EmulatorConfig,
        faults: Faults,
        job_env: dict[str, str],
        endpoint_url: Callable[[], str],
        batch: BatchClient,
        logs: CloudWatchLogsClient,
        s3: S3Client,
        work_dir: str,
    ) -> None:
        self.config = config
        self.faults = faults
        self.job_env = job_env
        self._endpoint_url = endpoint_url
        self._batch = batch
        self._logs = logs
        self._s3 = s3
        self._work_dir = work_dir
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.jobs: dict[str, Job] = {}
        self._order: list[Job] = []  # top-level jobs (non-array and parents) in submit order
        self._ready: deque[Job] = deque()
        self._running = 0
        self._runners: set[threading.Thread] = set()
        self._stopping = False
        self._log_groups: set[str] = set()
        self._lookup_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._thread = threading.Thread(target=self._loop, name="batch-emulator-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ scheduler

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._events, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._events and self._events[0][0] <= now:
                        break
                    timeout = self._events[0][0] - now if self._events else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                due: list[Callable[[], None]] = []
                now = time.monotonic()
                while self._events and self._events[0][0] <= now:
                    due.append(heapq.heappop(self._events)[2])
                for fn in due:
                    try:
                        fn()
                    except (OSError, ValueError, KeyError, RuntimeError):
                        LOG.exception("batch emulator: scheduled event failed")

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            procs = [j.current.proc for j in self.jobs.values() if j.current is not None and j.current.proc is not None]
        for proc in procs:
            _killpg(proc, signal.SIGKILL)
        self._thread.join(timeout=5)
        for runner in list(self._runners):
            runner.join(timeout=10)

    # ------------------------------------------------------------------ lookups in moto

    def _cached(self, key: str, fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        hit = self._lookup_cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        value = fetch()
        self._lookup_cache[key] = (time.monotonic() + _LOOKUP_TTL_SECONDS, value)
        return value

    def _resolve_queue(self, ident: object) -> dict[str, Any]:
        if not isinstance(ident, str) or not ident:
            raise client_error("jobQueue is required")

        def fetch() -> dict[str, Any]:
            queues = self._batch.describe_job_queues(jobQueues=[ident])["jobQueues"]
            found = [q for q in queues if ident in (q["jobQueueArn"], q["jobQueueName"])]
            if not found:
                raise client_error(f"JobQueue {ident} not found")
            return dict(found[0])

        queue = self._cached("queue:" + ident, fetch)
        if queue.get("state", "ENABLED") != "ENABLED":
            raise client_error(f"JobQueue {ident} is not in ENABLED state")
        return queue

    def _resolve_job_definition(self, ident: object) -> dict[str, Any]:
        if not isinstance(ident, str) or not ident:
            raise client_error("jobDefinition is required")

        def fetch() -> dict[str, Any]:
            candidates: list[dict[str, Any]]
            if ident.startswith("arn:"):
                found = self._batch.describe_job_definitions(jobDefinitions=[ident])["jobDefinitions"]
                candidates = [dict(d) for d in found if d["jobDefinitionArn"] == ident]
            else:
                name, _, revision = ident.partition(":")
                found = self._batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
                candidates = [dict(d) for d in found if d["jobDefinitionName"] == name]
                if revision:
                    candidates = [d for d in candidates if str(d["revision"]) == revision]
                else:
                    candidates = [d for d in candidates if d.get("status") == "ACTIVE"]
                    candidates.sort(key=lambda d: int(d["revision"]), reverse=True)
            if not candidates:
                raise client_error(f"JobDefinition {ident} not found")
            return candidates[0]

        jobdef = self._cached("jobdef:" + ident, fetch)
        if jobdef.get("status", "ACTIVE") != "ACTIVE":
            raise client_error(f"JobDefinition {ident} is not ACTIVE")
        return jobdef

    # ------------------------------------------------------------------ API operations

    def submit(self, req: dict[str, Any]) -> dict[str, Any]:
        name = rules.validate_job_name(req.get("jobName"))
        array_size: int | None = None
        array_props = req.get("arrayProperties") or {}
        if "size" in array_props:
            array_size = rules.validate_array_size(array_props["size"])
        queue = self._resolve_queue(req.get("jobQueue"))
        jobdef = self._resolve_job_definition(req.get("jobDefinition"))
        cp = dict(jobdef.get("containerProperties") or {})
        if not cp:
            raise client_error("The emulator only runs container job definitions (containerProperties)")
        if "timeout" in req:
            timeout = rules.validate_timeout(req.get("timeout"))
        else:
            timeout = rules.validate_timeout(jobdef.get("timeout"))
        retry = req.get("retryStrategy") or jobdef.get("retryStrategy") or None
        rules.validate_retry_strategy(retry)
        params = {**(jobdef.get("parameters") or {}), **(req.get("parameters") or {})}
        overrides = req.get("containerOverrides") or {}
        command = rules.substitute_parameters(overrides.get("command") or cp.get("command") or [], params)
        env_over = list(overrides.get("environment") or [])
        rr_over = list(overrides.get("resourceRequirements") or [])
        length = rules.container_overrides_length(command, env_over, rr_over)
        environment = _merge_named(cp.get("environment") or [], env_over, "name")
        resources = _merge_named(cp.get("resourceRequirements") or [], rr_over, "type")
        log_conf = cp.get("logConfiguration") or {}
        options = log_conf.get("options") or {}
        order = queue.get("computeEnvironmentOrder") or [{}]
        ce_name = str(order[0].get("computeEnvironment", "emulator-ce")).rsplit("/", 1)[-1]
        tags = dict(req.get("tags") or {})
        propagate = bool(req.get("propagateTags", jobdef.get("propagateTags", False)))
        if propagate:
            tags = {**(jobdef.get("tags") or {}), **tags}
        job_id = str(uuid.uuid4())
        job = Job(
            job_id=job_id,
            job_arn=self._job_arn(job_id),
            name=name,
            queue_arn=queue["jobQueueArn"],
            queue_name=queue["jobQueueName"],
            ce_name=ce_name,
            job_def_arn=jobdef["jobDefinitionArn"],
            job_def_name=jobdef["jobDefinitionName"],
            container_properties=cp,
            parameters=params,
            command=command,
            environment=environment,
            resource_requirements=resources,
            overrides_length=length,
            timeout_seconds=timeout,
            retry_strategy=retry,
            tags=tags,
            propagate_tags=propagate,
            log_group=str(options.get("awslogs-group") or "/aws/batch/job"),
            log_stream_prefix=str(options.get("awslogs-stream-prefix") or jobdef["jobDefinitionName"]),
            created_at=now_ms(),
            array_size=array_size,
        )
        for key in ("shareIdentifier", "schedulingPriorityOverride", "dependsOn"):
            if key in req:
                job.extra[key] = req[key]
        with self.lock:
            self.jobs[job_id] = job
            self._order.append(job)
            glob = self.faults.vanish_job_name_glob
            if (glob is not None and fnmatch.fnmatchcase(name, glob)) or self.faults.draw(self.faults.vanish_rate):
                self.faults.vanished_job_ids.add(job_id)
            self._schedule(self.config.delay_submitted, lambda: self._to_pending(job))
        return {"jobArn": job.job_arn, "jobName": name, "jobId": job_id}

    def describe(self, ids: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            vanished = self.faults.vanished_job_ids
            for ident in ids:
                job_id = ident.rsplit(":job/", 1)[-1] if ident.startswith("arn:") else ident
                job = self.jobs.get(job_id)
                if job is None or job_id in vanished:
                    continue
                out.append(self._describe_job(job))
        return out

    def list_jobs(self, req: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Matching job summaries (newest first) and the number of jobs before pagination."""
        queue_ident = req.get("jobQueue")
        array_id = req.get("arrayJobId")
        multinode = req.get("multiNodeJobId")
        if sum(1 for x in (queue_ident, array_id, multinode) if x) != 1:
            raise client_error("You must specify exactly one of jobQueue, arrayJobId or multiNodeJobId")
        if multinode:
            return [], 0
        filters = req.get("filters") or []
        if len(filters) > 1:
            raise client_error("Only one filter can be used at a time")
        status = req.get("jobStatus")
        if status is not None and status not in STATUSES:
            raise client_error(f"jobStatus {status} is not valid")
        with self.lock:
            if array_id:
                parent = self.jobs.get(str(array_id))
                if parent is None or not parent.is_parent:
                    raise client_error(f"Job {array_id} is not an array job")
                candidates = list(parent.children)
            else:
                queue = self._resolve_queue(queue_ident)
                candidates = [j for j in self._order if j.queue_arn == queue["jobQueueArn"]]
            if filters:
                candidates = [j for j in candidates if _filter_match(filters[0], j)]
            else:
                wanted = status or RUNNING
                candidates = [j for j in candidates if j.status == wanted]
            vanished = self.faults.vanished_job_ids
            candidates = [j for j in candidates if j.job_id not in vanished]
            candidates.sort(key=lambda j: j.created_at, reverse=True)
            return [self._summary(j) for j in candidates], len(candidates)

    def cancel(self, job_id: str, reason: str) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            self._cancel(job, reason)

    def terminate(self, job_id: str, reason: str) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            self._terminate(job, reason)

    def job_for_arn(self, arn: str) -> Job | None:
        with self.lock:
            return self.jobs.get(arn.rsplit(":job/", 1)[-1])

    def snapshot_status(self) -> dict[str, int]:
        """Count of all jobs (children included, parents excluded) by status."""
        with self.lock:
            counts = dict.fromkeys(STATUSES, 0)
            for job in self.jobs.values():
                if not job.is_parent:
                    counts[job.status] += 1
            return counts

    def running_processes(self) -> int:
        with self.lock:
            return sum(
                1
                for j in self.jobs.values()
                if j.current is not None and j.current.proc is not None and j.current.proc.poll() is None
            )

    # ------------------------------------------------------------------ describe helpers

    def _job_arn(self, job_id: str) -> str:
        return f"arn:aws:batch:{self.config.region}:{self.config.account_id}:job/{job_id}"

    def _status_summary(self, parent: Job) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for child in parent.children:
            counts[child.status] += 1
        if not parent.children and parent.array_size:
            counts[SUBMITTED] = 0
        return counts

    def _array_properties(self, job: Job) -> dict[str, Any] | None:
        if job.is_parent:
            return {
                "statusSummary": self._status_summary(job),
                "statusSummaryLastUpdatedAt": job.summary_updated_at or job.created_at,
                "size": job.array_size,
            }
        if job.array_index is not None:
            return {"index": job.array_index}
        return None

    def _describe_job(self, job: Job) -> dict[str, Any]:
        container: dict[str, Any] = {
            k: v
            for k, v in job.container_properties.items()
            if k not in ("command", "environment", "resourceRequirements")
        }
        container["command"] = list(job.command)
        container["environment"] = [dict(e) for e in job.environment]
        container["resourceRequirements"] = [dict(r) for r in job.resource_requirements]
        last = job.current if job.current is not None else (job.attempts[-1] if job.attempts else None)
        if last is not None and not job.is_parent:
            container["taskArn"] = f"arn:aws:ecs:{self.config.region}:{self.config.account_id}:task/emulator/"
            container["taskArn"] += last.task_id
            if last.started_at is not None:
                container["logStreamName"] = last.log_stream
            if last.exit_code is not None:
                container["exitCode"] = last.exit_code
            if last.reason is not None:
                container["reason"] = last.reason
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobName": job.name,
            "jobId": job.job_id,
            "jobQueue": job.queue_arn,
            "status": job.status,
            "attempts": [a.describe(self.config.account_id, self.config.region) for a in job.attempts],
            "createdAt": job.created_at,
            "dependsOn": list(job.extra.get("dependsOn") or []),
            "jobDefinition": job.job_def_arn,
            "parameters": dict(job.parameters),
            "container": container,
            "tags": dict(job.tags),
            "propagateTags": job.propagate_tags,
            "platformCapabilities": [],
            "isCancelled": job.is_cancelled,
            "isTerminated": job.is_terminated,
        }
        if job.retry_strategy:
            out["retryStrategy"] = job.retry_strategy
        if job.timeout_seconds is not None:
            out["timeout"] = {"attemptDurationSeconds": job.timeout_seconds}
        if job.status_reason is not None:
            out["statusReason"] = job.status_reason
        if job.started_at is not None:
            out["startedAt"] = job.started_at
        if job.stopped_at is not None:
            out["stoppedAt"] = job.stopped_at
        if "shareIdentifier" in job.extra:
            out["shareIdentifier"] = job.extra["shareIdentifier"]
        if "schedulingPriorityOverride" in job.extra:
            out["schedulingPriority"] = job.extra["schedulingPriorityOverride"]
        array = self._array_properties(job)
        if array is not None:
            out["arrayProperties"] = array
        return out

    def _summary(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobId": job.job_id,
            "jobName": job.name,
            "createdAt": job.created_at,
            "status": job.status,
            "jobDefinition": job.job_def_arn,
        }
        if job.status_reason is not None:
            out["statusReason"] = job.status_reason
        if job.started_at is not None:
            out["startedAt"] = job.started_at
        if job.stopped_at is not None:
            out["stoppedAt"] = job.stopped_at
        last = job.attempts[-1] if job.attempts else None
        if last is not None and job.status in TERMINAL:
            container: dict[str, Any] = {}
            if last.exit_code is not None:
                container["exitCode"] = last.exit_code
            if last.reason is not None:
                container["reason"] = last.reason
            out["container"] = container
        if job.is_parent:
            out["arrayProperties"] = {"size": job.array_size, "statusSummary": self._status_summary(job)}
        elif job.array_index is not None:
            out["arrayProperties"] = {"index": job.array_index}
        return out

    # ------------------------------------------------------------------ state machine (called with the lock held)

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
                    job_arn=self._job_arn(child_id),
                    name=job.name,
                    queue_arn=job.queue_arn,
                    queue_name=job.queue_name,
                    ce_name=job.ce_name,
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
                self._schedule(self.config.delay_submitted, lambda c=child: self._to_pending(c))  # type: ignore[misc]
            job.summary_updated_at = created
            return
        self._schedule(self.config.delay_pending, lambda: self._to_runnable(job))

    def _to_runnable(self, job: Job) -> None:
        if job.status != PENDING:
            return
        self._set_status(job, RUNNABLE)
        self._schedule(self.config.delay_runnable, lambda: self._make_ready(job))

    def _make_ready(self, job: Job) -> None:
        if job.status != RUNNABLE:
            return
        self._ready.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._ready and self._running < self.config.max_running_jobs and not self._stopping:
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
            self._schedule(self.config.delay_starting, lambda j=job, a=attempt: self._to_running(j, a))  # type: ignore[misc]

    def _to_running(self, job: Job, attempt: Attempt) -> None:
        if job.status != STARTING or job.current is not attempt:
            return
        attempt.started_at = now_ms()
        job.started_at = attempt.started_at
        if job.parent is not None and job.parent.started_at is None:
            job.parent.started_at = attempt.started_at
        self._set_status(job, RUNNING)
        runner = threading.Thread(
            target=self._run_attempt, args=(job, attempt), name=f"batch-job-{job.job_id}", daemon=True
        )
        self._runners.add(runner)
        runner.start()
        if job.timeout_seconds is not None:
            if self.config.timeout_override_seconds is not None:
                seconds = self.config.timeout_override_seconds
            else:
                seconds = job.timeout_seconds * self.config.time_scale
            self._schedule(seconds, lambda: self._kill_attempt(job, attempt, "timeout", rules.MSG_TIMEOUT))
        faults = self.faults
        if attempt.number in faults.spot_reclaim_attempts and (
            faults.spot_reclaim_job_name_glob is None
            or fnmatch.fnmatchcase(job.name, faults.spot_reclaim_job_name_glob)
        ):
            self._schedule(
                faults.spot_reclaim_after_seconds,
                lambda: self._kill_attempt(job, attempt, "spot", rules.MSG_SPOT),
            )

    def _grace(self) -> float:
        if self.config.kill_grace_seconds is not None:
            return self.config.kill_grace_seconds
        return rules.AWS_KILL_GRACE_SECONDS * self.config.time_scale

    def _kill_attempt(self, job: Job, attempt: Attempt, cause: str, reason: str) -> None:
        if job.current is not attempt or attempt.finished or attempt.kill_cause is not None:
            return
        if attempt.proc is not None and attempt.proc.poll() is not None:
            return  # it already exited on its own: its own outcome stands
        attempt.kill_cause = cause
        attempt.kill_reason = reason
        if attempt.proc is None:
            return  # the runner kills it as soon as it has started
        if cause == "spot":
            _killpg(attempt.proc, signal.SIGKILL)
            return
        _killpg(attempt.proc, signal.SIGTERM)
        proc = attempt.proc
        self._schedule(self._grace(), lambda: _killpg(proc, signal.SIGKILL))

    def _cancel(self, job: Job, reason: str) -> None:
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

    def _terminate(self, job: Job, reason: str) -> None:
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
                self._terminate(child, reason)
            return
        if job.status in EARLY:
            job.is_terminated = True
            self._finalize(job, FAILED, reason)
        elif job.status in (STARTING, RUNNING) and job.current is not None:
            job.is_terminated = True
            attempt = job.current
            self._schedule(self.config.terminate_delay_seconds, lambda: self._terminate_now(job, attempt, reason))

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

    def _attempt_ended(self, job: Job, attempt: Attempt, returncode: int | None, start_error: str | None) -> None:
        attempt.finished = True
        attempt.stopped_at = now_ms()
        attempt.proc = None
        job.current = None
        job.attempts.append(attempt)
        self._running -= 1
        cause = attempt.kill_cause
        if cause == "spot":
            attempt.status_reason = rules.MSG_SPOT
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
            self._finalize(job, SUCCEEDED, "Essential container in task exited")
        elif cause in ("timeout", "terminate"):
            self._finalize(job, FAILED, attempt.status_reason)
        elif not self._stopping and rules.should_retry(
            job.retry_strategy, attempt.number, attempt.status_reason, attempt.reason, attempt.exit_code
        ):
            job.status_reason = attempt.status_reason
            self._set_status(job, RUNNABLE)
            self._schedule(self.config.delay_runnable, lambda: self._make_ready(job))
        else:
            self._finalize(job, FAILED, attempt.status_reason)
        self._dispatch()

    # ------------------------------------------------------------------ job processes

    def _process_env(self, job: Job, attempt: Attempt) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.config.inherit_environment:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PATH"] = self.config.python_bin_dir + os.pathsep + env.get("PATH", os.defpath)
        env.update(
            {
                "AWS_ENDPOINT_URL": self._endpoint_url(),
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.config.region,
                "AWS_REGION": self.config.region,
            }
        )
        for item in job.environment:
            env[item["name"]] = item.get("value", "")
        env.update(self.job_env)
        env.update(
            {
                "AWS_BATCH_JOB_ID": job.job_id,
                "AWS_BATCH_JOB_ATTEMPT": str(attempt.number),
                "AWS_BATCH_JQ_NAME": job.queue_name,
                "AWS_BATCH_CE_NAME": job.ce_name,
            }
        )
        if job.array_index is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.array_index)
        return env

    def _run_attempt(self, job: Job, attempt: Attempt) -> None:
        try:
            self._run_attempt_inner(job, attempt)
        finally:
            self._runners.discard(threading.current_thread())

    def _run_attempt_inner(self, job: Job, attempt: Attempt) -> None:
        with self.lock:
            env = self._process_env(job, attempt)
            argv = list(job.command)
        sink = _LogSink(self, job.log_group, attempt.log_stream)
        start_error: str | None = None
        returncode: int | None = None
        executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if executable is None:
            start_error = f"CannotStartContainerError: executable not found: {argv[0] if argv else '(empty command)'}"
            sink.add(start_error)
        else:
            sink.flush(final=False)  # the log stream exists once the container starts, as on AWS
            try:
                proc = subprocess.Popen(
                    [executable, *argv[1:]],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._work_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                start_error = f"CannotStartContainerError: {exc}"
                sink.add(start_error)
            else:
                with self.lock:
                    attempt.proc = proc
                    pending = attempt.kill_cause
                    stopping = self._stopping
                if stopping or pending == "spot":
                    _killpg(proc, signal.SIGKILL)
                elif pending is not None:
                    _killpg(proc, signal.SIGTERM)
                    self._schedule(self._grace(), lambda: _killpg(proc, signal.SIGKILL))
                returncode = _pump(proc, sink, self.config.log_flush_seconds)
        sink.flush()
        with self.lock:
            succeeded = start_error is None and returncode == 0 and attempt.kill_cause is None
        if succeeded and not self._stopping:
            self._run_success_hooks(job, attempt, env)
        with self.lock:
            self._attempt_ended(job, attempt, returncode, start_error)

    def _run_success_hooks(self, job: Job, attempt: Attempt, env: dict[str, str]) -> None:
        info = JobInfo(
            job_id=job.job_id,
            job_name=job.name,
            job_queue=job.queue_name,
            attempt=attempt.number,
            array_index=job.array_index,
            parameters=dict(job.parameters),
            command=list(job.command),
            environment=dict(env),
        )
        for pattern in list(self.faults.delete_on_success_globs):
            self._delete_matching(pattern, info)
        for hook in list(self.faults.on_success_hooks):
            try:
                hook(info, self._s3)
            except Exception:  # a user hook must never kill the job engine; it is logged
                LOG.exception("batch emulator: success hook failed for job %s", job.job_id)

    def _delete_matching(self, pattern: str, info: JobInfo) -> None:
        expanded = pattern.format(
            job_id=info.job_id,
            job_name=info.job_name,
            array_index="" if info.array_index is None else info.array_index,
            attempt=info.attempt,
        )
        if not expanded.startswith("s3://") or "/" not in expanded[5:]:
            LOG.warning("batch emulator: delete_on_success glob %r is not s3://bucket/key-glob", pattern)
            return
        bucket, key_glob = expanded[5:].split("/", 1)
        prefix = key_glob
        for i, char in enumerate(key_glob):
            if char in "*?[":
                prefix = key_glob[:i]
                break
        try:
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if fnmatch.fnmatchcase(obj["Key"], key_glob):
                        self._s3.delete_object(Bucket=bucket, Key=obj["Key"])
        except (ClientError, BotoCoreError):
            LOG.exception("batch emulator: deleting %s failed", expanded)

    def _put_logs(self, group: str, stream: str, events: list[tuple[int, str]], create: bool) -> None:
        try:
            if create:
                if group not in self._log_groups:
                    with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                        self._logs.create_log_group(logGroupName=group)
                    self._log_groups.add(group)
                with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                    self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
            for chunk in _chunks(events):
                self._logs.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=[{"timestamp": t, "message": m} for t, m in chunk],
                )
        except (ClientError, BotoCoreError):
            LOG.exception("batch emulator: writing logs to %s/%s failed", group, stream)


class _LogSink:
    def __init__(self, engine: Engine, group: str, stream: str) -> None:
        self._engine = engine
        self._group = group
        self._stream = stream
        self._events: list[tuple[int, str]] = []
        self._created = False
        self._last_ts = 0
        self._partial = b""

    def add(self, line: str) -> None:
        if not line:
            return
        ts = max(now_ms(), self._last_ts)
        self._last_ts = ts
        self._events.append((ts, line))

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self.add(raw.rstrip(b"\r").decode("utf-8", errors="replace"))

    def flush(self, final: bool = True) -> None:
        if final and self._partial:
            self.add(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
        if not self._events and self._created:
            return
        events, self._events = self._events, []
        self._engine._put_logs(self._group, self._stream, events, create=not self._created)
        self._created = True


def _pump(proc: subprocess.Popen[bytes], sink: _LogSink, flush_every: float) -> int:
    """Copy the process output to the sink until it exits; then kill what is left of its process group."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    last_flush = time.monotonic()
    exited_at: float | None = None
    try:
        while True:
            if selector.select(timeout=0.1):
                data = os.read(fd, 65536)
                if not data:
                    break
                sink.feed(data)
            if time.monotonic() - last_flush >= flush_every:
                sink.flush(final=False)
                last_flush = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
                _killpg(proc, signal.SIGKILL)  # the container's other processes die with it
            elif exited_at is not None and time.monotonic() - exited_at > 2.0:
                break  # a process that left the group still holds the pipe: stop reading
    finally:
        selector.close()
        proc.stdout.close()
    returncode = proc.wait()
    _killpg(proc, signal.SIGKILL)
    return returncode


def _killpg(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _chunks(events: list[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    size = 0
    for event in events:
        cost = len(event[1].encode()) + 26
        if chunk and (len(chunk) >= _LOG_CHUNK_EVENTS or size + cost > _LOG_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += cost
    if chunk:
        yield chunk


def _merge_named(base: list[dict[str, Any]], overrides: list[dict[str, Any]], key: str) -> list[dict[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    for item in [*base, *overrides]:
        merged[str(item.get(key))] = {k: str(v) for k, v in item.items()}
    return list(merged.values())


def _filter_match(flt: dict[str, Any], job: Job) -> bool:
    name = flt.get("name")
    values = flt.get("values") or []
    if not values:
        raise client_error("A ListJobs filter needs a value")
    value = str(values[0])
    if name == "JOB_NAME":
        return rules.name_glob_match(value, job.name, case_insensitive=True)
    if name == "JOB_DEFINITION":
        if value.startswith("arn:"):
            return job.job_def_arn == value
        if ":" in value:
            return job.job_def_arn.endswith(f"job-definition/{value}")
        return rules.name_glob_match(value, job.job_def_name, case_insensitive=False)
    if name in ("BEFORE_CREATED_AT", "AFTER_CREATED_AT"):
        try:
            limit = int(value)
        except ValueError as exc:
            raise client_error(f"{name} must be milliseconds since the epoch") from exc
        return job.created_at < limit if name == "BEFORE_CREATED_AT" else job.created_at > limit
    if name == "SHARE_IDENTIFIER":
        return bool(job.extra.get("shareIdentifier") == value)
    raise client_error(f"Filter name {name} is not supported")
