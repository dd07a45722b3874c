"""The job engine: the Batch job API operations (SubmitJob, DescribeJobs, ListJobs, Cancel/TerminateJob).

It wires the parts together, each in its own module: `model` (job records), `clock` (timed events), `states` (the
job state machine), `execution` (attempts as local processes), `inprocess` (the runner on a thread), `joblogs`
(their output in CloudWatch Logs), `render` (AWS-shaped answers) and `faults` (injected faults). All job state is
guarded by one re-entrant lock. Queues and job definitions are read from moto over HTTP.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batch_emulator import faults as fault_effects
from batch_emulator import rules
from batch_emulator.clock import Clock
from batch_emulator.config import EmulatorConfig, Faults
from batch_emulator.container import SecretResolver
from batch_emulator.execution import ProcessExecutor
from batch_emulator.inprocess import ThreadExecutor
from batch_emulator.joblogs import JobLogs
from batch_emulator.model import RUNNING, STATUSES, Job, now_ms
from batch_emulator.render import filter_match, job_arn, job_detail, job_summary
from batch_emulator.rules import client_error
from batch_emulator.states import JobStates

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_s3 import S3Client

_LOOKUP_TTL_SECONDS = 2.0


class Engine:
    """Owns every job; thread-safe; all public methods may be called from request threads."""

    def __init__(
        self,
        config: EmulatorConfig,
        faults: Faults,
        job_env: dict[str, str],
        endpoint_url: Callable[[], str],
        batch: BatchClient,
        s3: S3Client,
        work_dir: str,
        resolve_secret: SecretResolver,
    ) -> None:
        self.config = config
        self.faults = faults
        self._batch = batch
        self._ecs_clusters: dict[str, str] = {}
        self.lock = threading.RLock()
        self._lookup_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._clock = Clock(self.lock)
        self._states = JobStates(config, faults, self.lock, self._clock, s3)
        job_logs = JobLogs(config.account_id, config.region)
        processes = ProcessExecutor(
            config,
            job_env,
            endpoint_url,
            job_logs,
            work_dir,
            self.lock,
            self._clock,
            self._states.attempt_exited,
            resolve_secret,
        )
        self._executor = ThreadExecutor(
            config, job_env, endpoint_url, job_logs, self.lock, processes, self._states.attempt_exited
        )
        self._states.executor = self._executor
        self.jobs = self._states.jobs

    def close(self) -> None:
        with self.lock:
            self._states.stopping = True
            attempts = [j.current for j in self.jobs.values() if j.current is not None]
        self._executor.close(attempts)
        self._clock.close()
        self._executor.join()

    # ------------------------------------------------------------------ lookups in moto

    def _cached(self, key: str, fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        hit = self._lookup_cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        value = fetch()
        self._lookup_cache[key] = (time.monotonic() + _LOOKUP_TTL_SECONDS, value)
        return value

    def _ecs_cluster(self, compute_environment: str) -> str:
        """The ECS cluster name of a compute environment, as moto created it (cached: it never changes)."""
        cluster = self._ecs_clusters.get(compute_environment)
        if cluster is None:
            found = self._batch.describe_compute_environments(computeEnvironments=[compute_environment])
            arns = [environment.get("ecsClusterArn") for environment in found.get("computeEnvironments", [])]
            cluster = str(arns[0] if arns and arns[0] else "emulator").rsplit("/", 1)[-1]
            self._ecs_clusters[compute_environment] = cluster
        return cluster

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
        if rules.is_fargate(jobdef):
            rules.validate_fargate_resources(resources)
        log_conf = cp.get("logConfiguration") or {}
        options = log_conf.get("options") or {}
        order = queue.get("computeEnvironmentOrder") or [{}]
        ce_reference = str(order[0].get("computeEnvironment", "emulator-ce"))
        ce_name = ce_reference.rsplit("/", 1)[-1]
        tags = dict(req.get("tags") or {})
        propagate = bool(req.get("propagateTags", jobdef.get("propagateTags", False)))
        if propagate:
            tags = {**(jobdef.get("tags") or {}), **tags}
        job_id = str(uuid.uuid4())
        job = Job(
            job_id=job_id,
            job_arn=job_arn(self.config.region, self.config.account_id, job_id),
            name=name,
            queue_arn=queue["jobQueueArn"],
            queue_name=queue["jobQueueName"],
            ce_name=ce_name,
            ecs_cluster=self._ecs_cluster(ce_reference),
            platform_capabilities=list(jobdef.get("platformCapabilities") or []),
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
        if rules.is_fargate(jobdef):
            job.extra["platform"] = rules.FARGATE  # a Spot interruption reads as Fargate Spot's, not EC2's
        for key in ("shareIdentifier", "schedulingPriorityOverride", "dependsOn"):
            if key in req:
                job.extra[key] = req[key]
        with self.lock:
            if fault_effects.vanishes(self.faults, name):
                self.faults.vanished_job_ids.add(job_id)
            self._states.add(job)
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
                out.append(job_detail(job, self.config.region, self.config.account_id))
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
                candidates = [j for j in self._states.order if j.queue_arn == queue["jobQueueArn"]]
            if filters:
                candidates = [j for j in candidates if filter_match(filters[0], j)]
            else:
                wanted = status or RUNNING
                candidates = [j for j in candidates if j.status == wanted]
            vanished = self.faults.vanished_job_ids
            candidates = [j for j in candidates if j.job_id not in vanished]
            if self.faults.list_jobs_lag_seconds > 0:  # an eventually consistent listing: young jobs not yet in it
                born_before = now_ms() - self.faults.list_jobs_lag_seconds * 1000
                candidates = [j for j in candidates if j.created_at <= born_before]
            candidates.sort(key=lambda j: j.created_at, reverse=True)
            return [job_summary(j) for j in candidates], len(candidates)

    def cancel(self, job_id: str, reason: str) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            self._states.cancel(job, reason)

    def terminate(self, job_id: str, reason: str) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            self._states.terminate(job, reason)

    def set_max_running_jobs(self, count: int) -> None:
        """How many jobs run at once from now on; 0 holds every job in RUNNABLE (as a queue without capacity)."""
        with self.lock:
            self.config.max_running_jobs = count
            self._states.dispatch()

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
            return sum(1 for j in self.jobs.values() if j.current is not None and self._executor.alive(j.current))


def _merge_named(base: list[dict[str, Any]], overrides: list[dict[str, Any]], key: str) -> list[dict[str, str]]:
    merged: dict[str, dict[str, str]] = {}
    for item in [*base, *overrides]:
        merged[str(item.get(key))] = {k: str(v) for k, v in item.items()}
    return list(merged.values())
