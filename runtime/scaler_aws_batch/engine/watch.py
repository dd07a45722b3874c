"""Two clocks on each tracked job, kept from describe answers alone (pure: every call is given the time).

- **Vanish clock.** A job that DescribeJobs *answered without* for ``vanish_bound_seconds`` is gone: its result can
  never arrive. A failed describe call pauses the clock: an outage is not a vanish.
- **RUNNABLE watch.** A job waiting for capacity longer than ``runnable_warn_seconds`` is explained once.
"""

from __future__ import annotations

from scaler_aws_batch.backends.base import JobState, JobStatus
from scaler_aws_batch.engine.ledger import JobRecord
from scaler_aws_batch.errors import JobVanishedError

_STARTED = (JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED)


def vanish_clock(job: JobRecord, *, answered: bool, reported: bool, now: float, bound_seconds: float) -> bool:
    """Advance ``job``'s vanish clock by one describe round. True when the job has vanished."""
    if not answered:  # the call failed: the clock pauses
        job.checked_at = now
        return False
    if reported:
        job.checked_at, job.missing_seconds = now, 0.0
        return False
    job.missing_seconds += now - job.checked_at
    job.checked_at = now
    return job.missing_seconds > bound_seconds


def vanished_errors(job: JobRecord, backend_name: str, bound_seconds: float) -> dict[str, JobVanishedError]:
    """The error each task of a vanished job fails with."""
    errors: dict[str, JobVanishedError] = {}
    for index, task_id in job.tasks.items():
        job_id = job.target(index)
        errors[task_id] = JobVanishedError(
            f"job {job_id} is no longer reported by {backend_name}: its describe calls answered without it "
            f"for {bound_seconds:.0f}s (failed calls do not count), so its result can "
            "never arrive. The job was also asked to stop. Resubmit the task.",
            job_id,
        )
    return errors


def runnable_overdue(job: JobRecord, status: JobStatus, now: float, warn_seconds: float) -> bool:
    """True once (per job) when it has waited in RUNNABLE longer than ``warn_seconds``: time to explain it."""
    summary = status.array_summary or {}
    waiting = status.state is JobState.RUNNABLE or (
        summary.get(JobState.RUNNABLE, 0) > 0 and not any(summary.get(state, 0) for state in _STARTED)
    )
    if not waiting:
        job.runnable_since = None
        return False
    if job.runnable_since is None:
        job.runnable_since = now
    if job.runnable_explained or now - job.runnable_since <= warn_seconds:
        return False
    job.runnable_explained = True
    return True
