"""The AWS Batch implementation of :class:`~scaler_aws_batch.backends.base.JobBackend`.

This class only talks to AWS: SubmitJob, DescribeJobs, CancelJob/TerminateJob, DescribeJobDefinitions (to measure
container overrides) and CloudWatch Logs GetLogEvents. Payloads, array packing, deadlines and results live in the
shared code.

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
import botocore.config
import botocore.exceptions

from scaler_aws_batch import fargate
from scaler_aws_batch.aws_calls import (
    DEFAULT_OTHER_TPS,
    AwsCalls,
    BackoffPolicy,
    TokenBucket,
    error_code,
)
from scaler_aws_batch.backends.aws_batch.capacity import describe_queues, explain_runnable, queue_capacities
from scaler_aws_batch.backends.aws_batch.usage import ComputePlacements, job_usage
from scaler_aws_batch.backends.base import PAYLOAD_PARAMETER, JobBackend, JobSpec, JobState, JobStatus, ListedJob
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, SPOT_INTERRUPTION_PREFIXES
from scaler_aws_batch.errors import BackendError, JobRejectedError
from scaler_aws_batch.limits import MIN_TIMEOUT_SECONDS, container_overrides_length, render_command
from scaler_aws_batch.resources import ComputeCapacity, Resources
from scaler_aws_batch.resources import resource_requirements as base_resource_requirements
from scaler_aws_batch.usage import ComputeKind

if TYPE_CHECKING:
    from mypy_boto3_batch.client import BatchClient
    from mypy_boto3_batch.literals import ResourceTypeType
    from mypy_boto3_batch.type_defs import (
        DescribeJobsResponseTypeDef,
        JobDefinitionTypeDef,
        JobDetailTypeDef,
        ListJobsResponseTypeDef,
        ResourceRequirementTypeDef,
        SubmitJobRequestTypeDef,
    )
    from mypy_boto3_logs.client import CloudWatchLogsClient

logger = logging.getLogger(__name__)

DEFAULT_LOG_GROUP: Final = "/aws/batch/job"
#: AWS allows 50 SubmitJob calls per second per account and region; stay below it so other callers have room.
DEFAULT_SUBMIT_TPS: Final = 40.0
DEFAULT_DESCRIBE_TPS: Final = 10.0
#: botocore's own retries per call (``standard`` mode; botocore's ``max_attempts`` key counts retries after the
#: first request, so 2 means up to 3 requests).
DEFAULT_BOTOCORE_MAX_RETRIES: Final = 2
#: GetLogEvents returns at most 10,000 events per call.
MAX_LOG_EVENTS: Final = 10_000
_CONNECT_TIMEOUT_SECONDS: Final = 10
_MAX_ERROR_MESSAGE_CHARS: Final = 300
_READ_TIMEOUT_SECONDS: Final = 60


@dataclasses.dataclass(frozen=True)
class _JobDefinitionInfo:
    command: tuple[str, ...]
    default_parameters: Mapping[str, str]
    status: str = "ACTIVE"
    environment_names: frozenset[str] = frozenset()
    #: Fargate job definitions accept only Fargate's vCPU/memory combinations and no GPUs.
    fargate: bool = False
    default_vcpus: float | None = None
    default_memory_mib: int | None = None


def _safe_message(exc: botocore.exceptions.ClientError, payload: str) -> str:
    """AWS's error message, shortened, with the payload blanked out should AWS echo it (validation errors do)."""
    message = str(exc.response.get("Error", {}).get("Message", ""))
    if payload:
        message = message.replace(payload, "<payload>")
    return message[:_MAX_ERROR_MESSAGE_CHARS]


def resource_requirements(resources: Resources) -> list[ResourceRequirementTypeDef]:
    """The ``containerOverrides.resourceRequirements`` for ``resources``, typed for the Batch client."""
    return [
        {"type": cast("ResourceTypeType", item["type"]), "value": item["value"]}
        for item in base_resource_requirements(resources)
    ]


def _job_state(value: str) -> JobState | None:
    try:
        return JobState(value)
    except ValueError:
        return None


class AwsBatchBackend(JobBackend):
    """Submit, describe and stop AWS Batch jobs.

    Give either ready clients (``batch_client``, ``logs_client``), a ``boto3.Session``, or nothing (the default
    credential chain). Clients this class builds use ``standard`` retries, ``region`` and ``endpoint_url`` (for the
    emulator or VPC endpoints), and are closed by :meth:`close`.
    """

    _batch: BatchClient
    _logs: CloudWatchLogsClient

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
        self.default_queue_name = job_queue
        self._capacities: dict[str, ComputeCapacity | None] | None = None
        self._capacity_lock = threading.Lock()

        def make_ec2() -> Any:  # only for DescribeInstanceTypes, once at start
            return (session or boto3.Session(region_name=region)).client(
                "ec2", region_name=region, endpoint_url=endpoint_url
            )

        self._make_ec2 = make_ec2
        self._owned_clients: list[BatchClient | CloudWatchLogsClient] = []
        refresh: Callable[[], None] | None = None
        if batch_client is None or logs_client is None:
            config = botocore.config.Config(
                retries={"mode": "standard", "max_attempts": botocore_max_retries},
                connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                read_timeout=_READ_TIMEOUT_SECONDS,
                user_agent_extra="scaler-aws-batch",
            )
            own_batch, own_logs = batch_client is None, logs_client is None

            def build(chosen: boto3.Session) -> None:
                self.close()
                if own_batch:
                    self._batch = chosen.client("batch", region_name=region, endpoint_url=endpoint_url, config=config)
                    self._owned_clients.append(self._batch)
                if own_logs:
                    self._logs = chosen.client("logs", region_name=region, endpoint_url=endpoint_url, config=config)
                    self._owned_clients.append(self._logs)

            build(session or boto3.Session(region_name=region))
            given = session

            def refresh() -> None:
                # A new default session reads the credential chain again; a session the caller chose is kept (its
                # credentials may be explicit), with fresh clients.
                build(given or boto3.Session(region_name=region))

        if batch_client is not None:
            self._batch = batch_client
        if logs_client is not None:
            self._logs = logs_client
        #: The shared AWS-call layer: pacing, counting, backoff, classification and credential refresh.
        self.calls = AwsCalls(
            rates={"SubmitJob": submit_tps, "DescribeJobs": describe_tps},
            other_tps=other_tps,
            backoff=backoff,
            refresh_credentials=refresh,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        #: Calls made to AWS by operation name, and attempts retried after throttling or a 5xx (see AwsCalls).
        self.api_calls = self.calls.api_calls
        self.retried_calls = self.calls.retried_calls

        self._job_definition_lock = threading.Lock()
        self._job_definition_info: _JobDefinitionInfo | None = None
        #: Which compute environment (and so Spot, On-Demand, Fargate) an ECS cluster belongs to, for usage records.
        self._placements = ComputePlacements(self._describe_compute_environments, clock=clock)

    # ------------------------------------------------------------------ JobBackend

    @property
    def name(self) -> str:
        return "aws-batch"

    def submit(self, spec: JobSpec) -> str:
        self._check_platform(spec)
        queue = spec.queue or self.job_queue
        request: SubmitJobRequestTypeDef = {
            "jobName": spec.name,
            "jobQueue": queue,
            "jobDefinition": self.job_definition,
            "parameters": {PAYLOAD_PARAMETER: spec.payload},
            "timeout": {"attemptDurationSeconds": max(MIN_TIMEOUT_SECONDS, spec.timeout_seconds)},
            "propagateTags": False,
        }
        if spec.tags:  # the API refuses an empty tags map
            request["tags"] = dict(spec.tags)
        requirements = resource_requirements(spec.resources)
        if requirements:
            request["containerOverrides"] = {"resourceRequirements": requirements}
        if spec.array_size is not None:
            request["arrayProperties"] = {"size": spec.array_size}

        started = time.monotonic()
        try:
            response = self.calls.call("SubmitJob", lambda: self._batch.submit_job(**request))
        except botocore.exceptions.ClientError as exc:
            aws_message = _safe_message(exc, spec.payload)
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
            status = self._job_status(job)
            if status is not None and status.job_id in wanted:
                # A finished job's usage; an array parent's at any time (its children's queue and resources).
                if status.state.is_final or status.array_summary is not None:
                    usage = job_usage(cast("Mapping[str, Any]", job), self._placements)
                    status = dataclasses.replace(status, usage=usage)
                statuses[status.job_id] = status
        logger.debug(
            "described %d job ids, %d known, in %.3fs", len(unique_ids), len(statuses), time.monotonic() - started
        )
        return statuses

    def _describe_compute_environments(self) -> list[Mapping[str, Any]]:
        """Every compute environment (all pages); nothing when the call is refused, so usage says "unknown"."""
        environments: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {}
        try:
            while True:
                page = self.calls.call(
                    "DescribeComputeEnvironments", lambda: self._batch.describe_compute_environments(**kwargs)
                )
                environments.extend(cast("list[Mapping[str, Any]]", page.get("computeEnvironments", [])))
                if not page.get("nextToken"):
                    return environments
                kwargs["nextToken"] = page["nextToken"]
        except (botocore.exceptions.ClientError, BackendError) as exc:
            # Usage records lose their compute kind; the jobs themselves are unaffected. An older stack's adapter
            # policy lacks batch:DescribeComputeEnvironments.
            logger.warning("usage: cannot read compute environments, compute kind will be 'unknown': %s", exc)
            return environments

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
        # ListJobs takes one filter; with a JOB_NAME filter it returns jobs in every status, and a trailing "*" makes
        # the value a prefix match. Live jobs are then described (100 ids a call) for their payloads.
        found: dict[str, ListedJob] = {}
        for queue in dict.fromkeys(queue or self.job_queue for queue in queues):
            kwargs: dict[str, Any] = {
                "jobQueue": queue,
                "filters": [{"name": "JOB_NAME", "values": [f"{name_prefix}*"]}],
            }
            while True:
                try:
                    page = self.calls.call("ListJobs", functools.partial(self._list_jobs_page, kwargs))
                except botocore.exceptions.ClientError as exc:
                    raise BackendError(f"ListJobs on queue {queue!r} failed ({error_code(exc)})") from exc
                for summary in page.get("jobSummaryList", []):
                    state = _job_state(summary.get("status", ""))
                    if state is None or not summary.get("jobName", "").startswith(name_prefix):
                        continue
                    size = summary.get("arrayProperties", {}).get("size")
                    found[summary["jobId"]] = ListedJob(summary["jobId"], summary["jobName"], state, size)
                token = page.get("nextToken")
                if not token:
                    break
                kwargs["nextToken"] = token
        live = [job_id for job_id, job in found.items() if not job.state.is_final]
        for start in range(0, len(live), self.max_describe_batch):
            chunk = live[start : start + self.max_describe_batch]
            try:
                response = self.calls.call("DescribeJobs", functools.partial(self._describe_raw, chunk))
            except botocore.exceptions.ClientError as exc:
                raise BackendError(f"DescribeJobs failed ({error_code(exc)})") from exc
            for job in response.get("jobs", []):
                listed = found.get(job.get("jobId", ""))
                if listed is not None:
                    payload = job.get("parameters", {}).get(PAYLOAD_PARAMETER)
                    found[listed.job_id] = dataclasses.replace(listed, payload=payload)
        logger.info("found %d job(s) named %s* (%d live)", len(found), name_prefix, len(live))
        return list(found.values())

    def _list_jobs_page(self, kwargs: dict[str, Any]) -> ListJobsResponseTypeDef:
        return self._batch.list_jobs(**kwargs)

    def _describe_raw(self, job_ids: list[str]) -> DescribeJobsResponseTypeDef:
        return self._batch.describe_jobs(jobs=job_ids)

    def overrides_length(self, spec: JobSpec) -> int:
        info = self._job_definition()
        parameters = {**info.default_parameters, PAYLOAD_PARAMETER: spec.payload}
        return container_overrides_length(
            render_command(info.command, parameters),
            environment=None,
            resource_requirements=base_resource_requirements(spec.resources),
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
        for client in self._owned_clients:
            client.close()
        self._owned_clients.clear()

    def check_ready(self, queues: Sequence[str]) -> None:
        """Credentials, regions, queues ENABLED and VALID, the job definition ACTIVE and naming the signing secret,
        and the queues' capacity (read once, for :meth:`capacity`)."""
        names = list(dict.fromkeys([self.job_queue, *queues]))
        for what, reference in [*((f"job queue {name}", name) for name in names),
                                (f"job definition {self.job_definition}", self.job_definition)]:  # fmt: skip
            arn_region = reference.split(":")[3] if reference.startswith("arn:") else None
            if arn_region and self.region and arn_region != self.region:
                raise BackendError(
                    f"{what} is in region {arn_region} but the worker uses region {self.region}: pass "
                    f"--region {arn_region} (or AWS_REGION), or the {what.split(' ', 1)[0]} of this region"
                )
        try:
            found = describe_queues(self.calls.call, self._batch, names)
        except botocore.exceptions.ClientError as exc:
            raise BackendError(f"DescribeJobQueues failed ({error_code(exc)}); check --region and the queues") from exc
        for name in names:
            queue = found.get(name)
            if queue is None:
                raise BackendError(
                    f"job queue {name} does not exist in region {self.region}: check --job-queue / "
                    "--on-demand-queue / --gpu-queue and --region, or deploy the stack"
                )
            state, status = queue.get("state"), queue.get("status")
            if state != "ENABLED" or status != "VALID":
                raise BackendError(
                    f"job queue {name} is {state} and {status} ({queue.get('statusReason') or 'no reason given'}); "
                    "it must be ENABLED and VALID: enable it (aws batch update-job-queue --state ENABLED) or fix its "
                    "compute environments"
                )
        info = self._job_definition()  # raises JobRejectedError (a BackendError) when missing or not ACTIVE
        if info.status != "ACTIVE":
            raise BackendError(
                f"job definition {self.job_definition} is {info.status}; register a new revision or point "
                "--job-definition at an ACTIVE one (the stack output JobDefinitionArn)"
            )
        if SIGNING_SECRET_ENV not in info.environment_names:
            raise BackendError(
                f"job definition {self.job_definition} does not set {SIGNING_SECRET_ENV} in its environment, so "
                "its jobs cannot read the signing key and would refuse every payload: redeploy the stack, or add "
                "the variable naming the same secret as --signing-secret"
            )
        try:
            capacities = queue_capacities(self.calls.call, self._batch, self._make_ec2, found)
        except botocore.exceptions.ClientError as exc:
            # The size check is a convenience; a worker whose policy predates it still serves.
            logger.warning("cannot read the queues' compute environments (%s); requests are not size-checked",
                           error_code(exc))  # fmt: skip
            capacities = dict.fromkeys(found)
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

    # ------------------------------------------------------------------ helpers

    def limiter(self, operation: str) -> TokenBucket:
        """The token bucket that paces ``operation``."""
        return self.calls.limiter(operation)

    def _check_platform(self, spec: JobSpec) -> None:
        """Refuse, before SubmitJob, a size a Fargate job definition cannot run (AWS would fail the job later)."""
        info = self._job_definition()
        if not info.fargate:
            return
        vcpus = spec.resources.vcpus if spec.resources.vcpus is not None else info.default_vcpus
        memory = spec.resources.memory_mib if spec.resources.memory_mib is not None else info.default_memory_mib
        problem = fargate.check(vcpus or 0.0, memory or 0, gpus=spec.resources.gpus or 0)
        if problem is not None:
            raise JobRejectedError(f"job {spec.name!r}: {problem}")

    def _job_definition(self) -> _JobDefinitionInfo:
        with self._job_definition_lock:
            if self._job_definition_info is None:
                self._job_definition_info = self._load_job_definition()
            return self._job_definition_info

    def _load_job_definition(self) -> _JobDefinitionInfo:
        reference = self.job_definition
        # An ARN goes in ``jobDefinitions``. A name is looked up with ``jobDefinitionName`` (paginated): a bare name
        # means the latest ACTIVE revision, as SubmitJob does; "name:revision" picks that revision.
        definitions: list[JobDefinitionTypeDef] = []
        try:
            if reference.startswith("arn:"):
                page = self.calls.call(
                    "DescribeJobDefinitions", lambda: self._batch.describe_job_definitions(jobDefinitions=[reference])
                )
                definitions.extend(page.get("jobDefinitions", []))
            else:
                name, _, revision = reference.partition(":")
                kwargs: dict[str, Any] = {"jobDefinitionName": name}
                if not revision:
                    kwargs["status"] = "ACTIVE"
                while True:
                    page = self.calls.call(
                        "DescribeJobDefinitions", lambda: self._batch.describe_job_definitions(**kwargs)
                    )
                    definitions.extend(page.get("jobDefinitions", []))
                    next_token = page.get("nextToken")
                    if not next_token:
                        break
                    kwargs["nextToken"] = next_token
                if revision:
                    definitions = [item for item in definitions if str(item.get("revision")) == revision]
        except botocore.exceptions.ClientError as exc:
            raise JobRejectedError(
                f"cannot read job definition {reference!r} ({error_code(exc)}); check --job-definition"
            ) from exc
        if not definitions:
            raise JobRejectedError(
                f"job definition {reference!r} does not exist or is not ACTIVE; check --job-definition"
            )
        definition = max(definitions, key=lambda item: item.get("revision", 0))
        command = tuple(definition.get("containerProperties", {}).get("command", []))
        if not command:
            raise JobRejectedError(
                f"job definition {reference!r} has no container command; it must run the scaler-batch runner"
            )
        logger.debug(
            "job definition %s revision %s: %d command parts",
            definition.get("jobDefinitionName"),
            definition.get("revision"),
            len(command),
        )
        container = definition.get("containerProperties", {})
        defaults = {item["type"]: item["value"] for item in container.get("resourceRequirements", [])}
        vcpus = defaults.get("VCPU", container.get("vcpus"))
        memory = defaults.get("MEMORY", container.get("memory"))
        return _JobDefinitionInfo(
            command=command,
            default_parameters=dict(definition.get("parameters", {})),
            fargate="FARGATE" in definition.get("platformCapabilities", []),
            default_vcpus=float(vcpus) if vcpus is not None else None,
            default_memory_mib=int(memory) if memory is not None else None,
            status=str(definition.get("status", "ACTIVE")),
            environment_names=frozenset(
                str(item.get("name")) for item in definition.get("containerProperties", {}).get("environment", [])
            ),
        )

    @staticmethod
    def _job_status(job: JobDetailTypeDef) -> JobStatus | None:
        state = _job_state(job.get("status", ""))
        job_id = job.get("jobId")
        if state is None or not job_id:
            logger.warning("ignoring job %s with unexpected status %r", job_id, job.get("status"))
            return None
        container = job.get("container", {})
        array_summary: dict[JobState, int] | None = None
        array_properties = job.get("arrayProperties", {})
        is_array_parent = "index" not in array_properties and (
            "size" in array_properties or "statusSummary" in array_properties
        )
        if is_array_parent:
            array_summary = {}
            for key, count in array_properties.get("statusSummary", {}).items():
                child_state = _job_state(key)
                if child_state is not None:
                    array_summary[child_state] = int(count)
        exit_code = container.get("exitCode")
        return JobStatus(
            job_id=job_id,
            state=state,
            status_reason=job.get("statusReason") or None,
            exit_code=int(exit_code) if exit_code is not None else None,
            attempts=len(job.get("attempts", [])),
            array_summary=array_summary,
            log_location=container.get("logStreamName") or None,
            spot_reclaims=sum(
                1
                for attempt in job.get("attempts", [])
                if str(attempt.get("statusReason", "")).startswith(SPOT_INTERRUPTION_PREFIXES)
            ),
        )
