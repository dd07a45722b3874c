"""Polling helpers for tests and benchmarks that drive the emulator through boto3 (deadlines, never durations)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_logs import CloudWatchLogsClient

T = TypeVar("T")

DEFAULT_DEADLINE_SECONDS = 60.0
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED"})


def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = DEFAULT_DEADLINE_SECONDS, interval: float = 0.02
) -> T:
    """Call `probe` until it returns something truthy; return it. Raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def describe_job(batch: BatchClient, job_id: str) -> dict[str, Any] | None:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    return dict(jobs[0]) if jobs else None


def wait_for_status(
    batch: BatchClient,
    job_id: str,
    statuses: Collection[str] = TERMINAL_STATUSES,
    timeout: float = DEFAULT_DEADLINE_SECONDS,
) -> dict[str, Any]:
    """Poll DescribeJobs until the job is in one of `statuses`; return its description."""

    def probe() -> dict[str, Any] | None:
        job = describe_job(batch, job_id)
        return job if job is not None and job["status"] in statuses else None

    return wait_until(probe, f"job {job_id} to reach {sorted(statuses)}", timeout)


def log_messages(logs: CloudWatchLogsClient, group: str, stream: str) -> list[str]:
    """Every message of a log stream, oldest first."""
    messages: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    while True:
        page = logs.get_log_events(**kwargs)
        messages.extend(e["message"] for e in page["events"])
        token = page.get("nextForwardToken")
        if not page["events"] or token is None or token == kwargs.get("nextToken"):
            return messages
        kwargs["nextToken"] = token
