"""The AWS Batch implementation of :class:`~scaler_aws_batch.backends.base.JobBackend`.

This class only talks to AWS: SubmitJob, DescribeJobs, CancelJob/TerminateJob, DescribeJobDefinitions (to measure
container overrides) and CloudWatch Logs GetLogEvents. Payloads, array packing, deadlines and results live in the
shared code. What is not submit/describe/cancel lives beside it: the clients (:mod:`scaler_aws_batch.aws_clients`),
the job-definition reader (:mod:`.job_definition`), request and response shapes (:mod:`.responses`), start-up
readiness (:mod:`.readiness`), finding jobs by name (:mod:`.listing`), queue capacity (:mod:`.capacity`) and usage
(:mod:`.usage`).

Every AWS call goes through the shared call layer (:class:`~scaler_aws_batch.aws_calls.AwsCalls`): pacing per
API, counting, classification by error code, backoff with jitter, and rebuilding the clients from a fresh
credential chain when AWS refuses the credentials (boto3 refreshes refreshable credentials by itself; this also
covers static keys replaced on disk or in the environment).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import boto3
import botocore.exceptions

from scaler_aws_batch.aws_calls import (
    DEFAULT_OTHER_TPS,
    STOP_JOB_TPS,
    AwsCalls,
    BackoffPolicy,
    TokenBucket,
    error_code,
)
from scaler_aws_batch.aws_clients import DEFAULT_BOTOCORE_MAX_RETRIES, BatchClients
from scaler_aws_batch.backends.aws_batch.capacity import explain_runnable
from scaler_aws_batch.backends.aws_batch.job_definition import JobDefinitionReader
from scaler_aws_batch.backends.aws_batch.listing import JobFinder
from scaler_aws_batch.backends.aws_batch.readiness import (
    check_job_definition,
    check_queues,
    check_regions,
    queue_capacities_or_unknown,
)
from scaler_aws_batch.backends.aws_batch.responses import job_status, safe_message, submit_request
from scaler_aws_batch.backends.aws_batch.usage import ComputePlacements, describe_compute_environments, job_usage
from scaler_aws_batch.backends.base import PAYLOAD_PARAMETER, JobBackend, JobSpec, JobState, JobStatus, ListedJob
from scaler_aws_batch.errors import BackendError, JobRejectedError
from scaler_aws_batch.limits import MIN_TIMEOUT_SECONDS, container_overrides_length, render_command
from scaler_aws_batch.resources import ComputeCapacity, Resources, resource_requirements
from scaler_aws_batch.usage import ComputeKind

if TYPE_CHECKING:
    from mypy_boto3_batch.client import BatchClient
    from mypy_boto3_logs.client import CloudWatchLogsClient

logger = logging.getLogger(__name__)

DEFAULT_LOG_GROUP: Final = "/aws/batch/job"
#: AWS allows 50 SubmitJob calls per second per account and region; stay below it so other callers have room.
DEFAULT_SUBMIT_TPS: Final = 40.0
DEFAULT_DESCRIBE_TPS: Final = 10.0
#: GetLogEvents returns at most 10,000 events per call.
MAX_LOG_EVENTS: Final = 10_000


class AwsBatchBackend(JobBackend):
    """Submit, describe and stop AWS Batch jobs.

    Give either ready clients (``batch_client``, ``logs_client``), a ``boto3.Session``, or nothing (the default
    credential chain): see :class:`~scaler_aws_batch.aws_clients.BatchClients`.
    """

    def __init__(
        self,
        *,
        job_queue: str,
        job_definition: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        batch_client: BatchClient | None = None,
        logs_client: CloudWatchLogsClient | None = None,
        log_group: str = DEFAULT_LOG_GROUP,
        submit_tps: float = DEFAULT_SUBMIT_TPS,
        describe_tps: float = DEFAULT_DESCRIBE_TPS,
        other_tps: float = DEFAULT_OTHER_TPS,
        botocore_max_retries: int = DEFAULT_BOTOCORE_MAX_RETRIES,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not job_queue:
            raise ValueError("job_queue is required (--job-queue)")
        if not job_definition:
            raise ValueError("job_definition is required (--job-definition)")
        self.job_queue = job_queue
        self.job_definition = job_definition
        self.log_group = log_group
        self.region = region
        self.min_timeout_seconds = MIN_TIMEOUT_SECONDS
        self.stop_jobs_per_second = STOP_JOB_TPS
        self.default_queue_name = job_queue
        self._capacities: dict[str, ComputeCapacity | None] | None = None
        self._capacity_lock = threading.Lock()
        self._clients = BatchClients(region=region, endpoint_url=endpoint_url, session=session,
                                     batch_client=batch_client, logs_client=logs_client,
                                     max_retries=botocore_max_retries)  # fmt: skip
        #: The shared AWS-call layer: pacing, counting, backoff, classification and credential refresh.
        self.calls = AwsCalls(
            rates={
                "SubmitJob": submit_tps,
                "DescribeJobs": describe_tps,
                "CancelJob": STOP_JOB_TPS,
                "TerminateJob": STOP_JOB_TPS,
            },
            other_tps=other_tps,
            backoff=backoff,
            refresh_credentials=self._clients.rebuild if self._clients.refreshable else None,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        #: Calls made to AWS by operation name, and attempts retried after throttling or a 5xx (see AwsCalls).
        self.api_calls = self.calls.api_calls
        self.retried_calls = self.calls.retried_calls
        self._job_definition = JobDefinitionReader(self.calls, self._clients, job_definition)
        self._finder = JobFinder(self.calls, self._clients, self.max_describe_batch)
        #: Which compute environment (and so Spot, On-Demand, Fargate) an ECS cluster belongs to, for usage records.
        self._placements = ComputePlacements(
            functools.partial(describe_compute_environments, self.calls, self._clients), clock=clock
        )

    @property
    def _batch(self) -> BatchClient:
        return self._clients.batch

    @property
    def _logs(self) -> CloudWatchLogsClient:
        return self._clients.logs

    # ------------------------------------------------------------------ JobBackend

    @property
    def name(self) -> str:
        return "aws-batch"

    def submit(self, spec: JobSpec) -> str:
        self._job_definition.get().check_platform(spec)
        queue = spec.queue or self.job_queue
        request = submit_request(spec, queue, self.job_definition)
        started = time.monotonic()
        try:
            response = self.calls.call("SubmitJob", lambda: self._batch.submit_job(**request))
        except botocore.exceptions.ClientError as exc:
            aws_message = safe_message(exc, spec.payload)
            raise JobRejectedError(
                f"AWS Batch rejected job {spec.name!r} ({error_code(exc)}: {aws_message}). "
                f"Check that job queue {queue!r} exists and is ENABLED (--job-queue / --on-demand-queue / --gpu-queue) "
                f"and that job definition {self.job_definition!r} exists and is ACTIVE (--job-definition)."
            ) from exc
        job_id = response["jobId"]
        logger.info(
            "submitted %s job %s (name=%s queue=%s) in %.3fs",
            f"array[{spec.array_size}]" if spec.array_size is not None else "single",
            job_id,
            spec.name,
            queue,
            time.monotonic() - started,
        )
        return job_id

    def describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        unique_ids = list(dict.fromkeys(job_ids))
        if len(unique_ids) > self.max_describe_batch:
            raise ValueError(
                f"describe takes at most {self.max_describe_batch} job ids per call (AWS limit), got {len(unique_ids)}"
            )
        if not unique_ids:
            return {}
        started = time.monotonic()
        try:
            response = self.calls.call("DescribeJobs", lambda: self._batch.describe_jobs(jobs=unique_ids))
        except botocore.exceptions.ClientError as exc:
            raise BackendError(f"DescribeJobs failed ({error_code(exc)})") from exc
        wanted = set(unique_ids)
        statuses: dict[str, JobStatus] = {}
        for job in response.get("jobs", []):
            status = job_status(job)
            if status is None:
                logger.warning("ignoring job %s with unexpected status %r", job.get("jobId"), job.get("status"))
            elif status.job_id in wanted:
                # A finished job's usage; an array parent's at any time (its children's queue and resources).
                if status.state.is_final or status.array_summary is not None:
                    usage = job_usage(cast("Mapping[str, Any]", job), self._placements)
                    status = dataclasses.replace(status, usage=usage)
                statuses[status.job_id] = status
        logger.debug(
            "described %d job ids, %d known, in %.3fs", len(unique_ids), len(statuses), time.monotonic() - started
        )
        return statuses

    def compute_kind(self, compute_environment: str | None) -> ComputeKind:
        return self._placements.by_environment(compute_environment) if compute_environment else ComputeKind.UNKNOWN

    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        if state is not None and state.is_final:
            logger.debug("job %s is already %s; nothing to cancel", job_id, state.value)
            return
        # A queued job may start between our last describe and now, and CancelJob on a started job is a no-op
        # success, so a queued (or unknown) job gets CancelJob then TerminateJob.
        reason = reason or "stopped by scaler-aws-batch"  # AWS requires a non-empty reason
        operations: list[str] = []
        if state is None or state.is_cancellable:
            operations.append("CancelJob")
        operations.append("TerminateJob")
        for operation in operations:
            try:
                if operation == "CancelJob":
                    self.calls.call(operation, lambda: self._batch.cancel_job(jobId=job_id, reason=reason))
                else:
                    self.calls.call(operation, lambda: self._batch.terminate_job(jobId=job_id, reason=reason))
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "ClientException":
                    raise BackendError(f"{operation} of job {job_id} failed ({error_code(exc)})") from exc
                # ClientException: the job is unknown or no longer stoppable. Tolerate it when the job has ended.
                current = self.describe([job_id]).get(job_id)
                if current is None or current.state.is_final:
                    logger.info(
                        "job %s %s before %s; nothing to stop",
                        job_id,
                        "is unknown" if current is None else f"ended {current.state.value}",
                        operation,
                    )
                    return
                raise BackendError(f"{operation} of job {job_id} (state {current.state.value}) was refused") from exc
        logger.info("asked AWS Batch to stop job %s (last seen %s)", job_id, state.value if state else "unknown")

    def find_jobs(self, name_prefix: str, queues: Sequence[str | None]) -> list[ListedJob]:
        return self._finder.find(name_prefix, [queue or self.job_queue for queue in queues])

    def overrides_length(self, spec: JobSpec) -> int:
        info = self._job_definition.get()
        parameters = {**info.default_parameters, PAYLOAD_PARAMETER: spec.payload}
        return container_overrides_length(
            render_command(info.command, parameters),
            environment=None,
            resource_requirements=resource_requirements(spec.resources),
        )

    def log_tail(self, job_id: str, lines: int) -> list[str]:
        if lines <= 0:
            return []
        status = self.describe([job_id]).get(job_id)
        if status is None or not status.log_location:
            return []
        try:
            stream = status.log_location
            response = self.calls.call(
                "GetLogEvents",
                lambda: self._logs.get_log_events(
                    logGroupName=self.log_group, logStreamName=stream, limit=min(lines, MAX_LOG_EVENTS),
                    startFromHead=False,
                ),
            )  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                logger.debug("no log stream %s in %s for job %s", status.log_location, self.log_group, job_id)
                return []
            raise BackendError(f"GetLogEvents for job {job_id} failed ({error_code(exc)})") from exc
        messages = [event.get("message", "") for event in response.get("events", [])]
        return messages[-lines:]

    def close(self) -> None:
        self._clients.close()

    def check_ready(self, queues: Sequence[str]) -> None:
        """Credentials, regions, queues ENABLED and VALID, the job definition ACTIVE and naming the signing secret,
        and the queues' capacity (read once, for :meth:`capacity`)."""
        names = list(dict.fromkeys([self.job_queue, *queues]))
        check_regions([*(("job queue", name) for name in names), ("job definition", self.job_definition)], self.region)
        found = check_queues(self.calls, self._clients, names, self.region)
        # JobRejectedError (a BackendError) when missing or not ACTIVE.
        check_job_definition(self._job_definition.get(), self.job_definition)
        capacities = queue_capacities_or_unknown(self.calls, self._clients, found)
        with self._capacity_lock:
            self._capacities = capacities

    def explain_runnable(self, queue: str | None, resources: Resources) -> str:
        name = queue or self.job_queue
        try:
            return explain_runnable(self.calls.call, self._batch, name, resources, self.capacity(queue))
        except botocore.exceptions.ClientError as exc:
            raise BackendError(f"DescribeJobQueues/DescribeComputeEnvironments failed ({error_code(exc)})") from exc

    def capacity(self, queue: str | None) -> ComputeCapacity | None:
        with self._capacity_lock:
            return None if self._capacities is None else self._capacities.get(queue or self.job_queue)

    def limiter(self, operation: str) -> TokenBucket:
        """The token bucket that paces ``operation``."""
        return self.calls.limiter(operation)
