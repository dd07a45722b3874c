"""AWS-shaped rendering of jobs: DescribeJobs entries, ListJobs summaries and ListJobs filters."""

from __future__ import annotations

from typing import Any

from batch_emulator import rules
from batch_emulator.model import STATUSES, SUBMITTED, TERMINAL, Attempt, Job
from batch_emulator.rules import client_error


def job_arn(region: str, account_id: str, job_id: str) -> str:
    return f"arn:aws:batch:{region}:{account_id}:job/{job_id}"


def _task_arn(region: str, account_id: str, cluster: str, task_id: str) -> str:
    return f"arn:aws:ecs:{region}:{account_id}:task/{cluster}/{task_id}"


def attempt_detail(attempt: Attempt, region: str, account_id: str, cluster: str = "emulator") -> dict[str, Any]:
    container: dict[str, Any] = {
        "taskArn": _task_arn(region, account_id, cluster, attempt.task_id),
        "containerInstanceArn": f"arn:aws:ecs:{region}:{account_id}:container-instance/{cluster}/{attempt.task_id}",
        "logStreamName": attempt.log_stream,
        "networkInterfaces": [],
    }
    if attempt.exit_code is not None:
        container["exitCode"] = attempt.exit_code
    if attempt.reason is not None:
        container["reason"] = attempt.reason
    out: dict[str, Any] = {"container": container}
    if attempt.started_at is not None:
        out["startedAt"] = attempt.started_at
    if attempt.stopped_at is not None:
        out["stoppedAt"] = attempt.stopped_at
    if attempt.status_reason is not None:
        out["statusReason"] = attempt.status_reason
    return out


def status_summary(parent: Job) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for child in parent.children:
        counts[child.status] += 1
    if not parent.children and parent.array_size:
        counts[SUBMITTED] = 0
    return counts


def _array_properties(job: Job) -> dict[str, Any] | None:
    if job.is_parent:
        return {
            "statusSummary": status_summary(job),
            "statusSummaryLastUpdatedAt": job.summary_updated_at or job.created_at,
            "size": job.array_size,
        }
    if job.array_index is not None:
        return {"index": job.array_index}
    return None


def job_detail(job: Job, region: str, account_id: str) -> dict[str, Any]:
    """One DescribeJobs entry."""
    container: dict[str, Any] = {
        k: v for k, v in job.container_properties.items() if k not in ("command", "environment", "resourceRequirements")
    }
    container["command"] = list(job.command)
    container["environment"] = [dict(e) for e in job.environment]
    container["resourceRequirements"] = [dict(r) for r in job.resource_requirements]
    last = job.current if job.current is not None else (job.attempts[-1] if job.attempts else None)
    if last is not None and not job.is_parent:
        container["taskArn"] = _task_arn(region, account_id, job.ecs_cluster, last.task_id)
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
        "attempts": [attempt_detail(a, region, account_id, job.ecs_cluster) for a in job.attempts],
        "createdAt": job.created_at,
        "dependsOn": list(job.extra.get("dependsOn") or []),
        "jobDefinition": job.job_def_arn,
        "parameters": dict(job.parameters),
        "container": container,
        "tags": dict(job.tags),
        "propagateTags": job.propagate_tags,
        "platformCapabilities": list(job.platform_capabilities),
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
    array = _array_properties(job)
    if array is not None:
        out["arrayProperties"] = array
    return out


def job_summary(job: Job) -> dict[str, Any]:
    """One ListJobs entry."""
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
        out["arrayProperties"] = {"size": job.array_size, "statusSummary": status_summary(job)}
    elif job.array_index is not None:
        out["arrayProperties"] = {"index": job.array_index}
    return out


def filter_match(flt: dict[str, Any], job: Job) -> bool:
    """Whether a job passes one ListJobs filter."""
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
