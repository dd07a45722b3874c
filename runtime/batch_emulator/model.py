"""Job records of the emulator: AWS Batch job statuses, a job, and one attempt at running it."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

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
    container: str | None = None  # the container's name, when the attempt runs in the job's image
    kill_cause: str | None = None  # "timeout" | "terminate" | "spot"
    kill_reason: str | None = None
    finished: bool = False


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
    #: The ECS cluster of the job's compute environment: task ARNs name it, which is how DescribeJobs tells (with
    #: DescribeComputeEnvironments) whether a job ran on Spot, On-Demand or Fargate.
    ecs_cluster: str = "emulator"
    platform_capabilities: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_parent(self) -> bool:
        return self.array_size is not None
