"""AWS Batch's request and response shapes: a SubmitJob request from a job spec, a JobStatus from a DescribeJobs
job detail, and AWS's error messages made safe to log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

import botocore.exceptions

from scaler_aws_batch.backends.base import PAYLOAD_PARAMETER, JobSpec, JobState, JobStatus
from scaler_aws_batch.contracts import SPOT_INTERRUPTION_PREFIXES
from scaler_aws_batch.limits import MIN_TIMEOUT_SECONDS
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.resources import resource_requirements as base_resource_requirements

if TYPE_CHECKING:
    from mypy_boto3_batch.literals import ResourceTypeType
    from mypy_boto3_batch.type_defs import JobDetailTypeDef, ResourceRequirementTypeDef, SubmitJobRequestTypeDef

_MAX_ERROR_MESSAGE_CHARS: Final = 300


def safe_message(exc: botocore.exceptions.ClientError, payload: str) -> str:
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


def submit_request(spec: JobSpec, queue: str, job_definition: str) -> SubmitJobRequestTypeDef:
    request: SubmitJobRequestTypeDef = {
        "jobName": spec.name,
        "jobQueue": queue,
        "jobDefinition": job_definition,
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
    return request


def job_state(value: str) -> JobState | None:
    try:
        return JobState(value)
    except ValueError:
        return None


def job_status(job: JobDetailTypeDef) -> JobStatus | None:
    """A DescribeJobs job detail as a JobStatus (without usage); None for a status this code does not know."""
    state = job_state(job.get("status", ""))
    job_id = job.get("jobId")
    if state is None or not job_id:
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
            child_state = job_state(key)
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
