"""Failure classification: a FAILED job that wrote no result becomes the error the user sees."""

from __future__ import annotations

from collections.abc import Sequence

from scaler_aws_batch.backends.base import JobStatus
from scaler_aws_batch.contracts import SPOT_INTERRUPTION_PREFIXES, RunnerExit, StatusReason
from scaler_aws_batch.errors import (
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    OverridesTooLongError,
    PayloadRejectedError,
    PayloadTamperedError,
    SpotRetriesExhaustedError,
)


def classify_failure(status: JobStatus, log_tail: Sequence[str]) -> JobFailedError:
    """Turn a FAILED job that wrote no result into the error the user sees."""
    reason = status.status_reason or "no reason given"
    tail = "\n".join(log_tail) if log_tail else "(no log lines)"
    detail = f"job {status.job_id}: {reason} (exit code {status.exit_code}, {status.attempts} attempt(s))"
    logs = f"\n--- last log lines ---\n{tail}"
    if status.exit_code == RunnerExit.PAYLOAD_REPLACED:
        return PayloadTamperedError(
            "tampering: the job's payload object was replaced in the store after submission (by someone with write "
            "access to the bucket, possibly with an earlier genuine payload), so the job refused it and ran "
            f"nothing; check who can write to the bucket's payload prefix, then submit the task again; {detail}{logs}",
            status.job_id,
            status.exit_code,
        )
    if status.exit_code == RunnerExit.BAD_PAYLOAD:
        return PayloadRejectedError(
            f"the job refused its payload before running anything (unsigned, tampered with, or signed with a key "
            f"its signing secret does not hold); {detail}{logs}",
            status.job_id,
            status.exit_code,
        )
    if reason.startswith(StatusReason.TIMEOUT):
        return JobTimeoutError(f"the task ran past its timeout and was stopped; {detail}{logs}", status.job_id, 143)
    if reason.startswith(SPOT_INTERRUPTION_PREFIXES):
        return SpotRetriesExhaustedError(
            "every attempt lost its Spot capacity (EC2 Spot or Fargate Spot); raise the retry attempts or use the "
            f"On-Demand queue (capability on_demand=1); {detail}{logs}",
            status.job_id,
            status.exit_code,
        )
    if reason.startswith(StatusReason.OVERRIDES_TOO_LONG):
        return OverridesTooLongError(
            f"AWS refused to start the job because its container overrides exceed 8,192 characters; {detail}",
            status.job_id,
            status.exit_code,
        )
    if status.exit_code == 137 or "OutOfMemory" in reason:
        return JobOutOfMemoryError(
            f"the container was killed for exceeding its memory; request more with the capability memory=<MiB>; "
            f"{detail}{logs}",
            status.job_id,
            137,
        )
    return JobFailedError(f"the job failed; {detail}{logs}", status.job_id, status.exit_code)
