"""Fault effects on jobs: vanishing jobs, Spot reclaims and the success hooks of `Faults`.

The settings themselves live in `batch_emulator.config.Faults`; this module decides what they do to a job.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from batch_emulator.config import Faults, JobInfo
from batch_emulator.model import Attempt, Job

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LOG = logging.getLogger("batch_emulator")


def vanishes(faults: Faults, job_name: str) -> bool:
    """Drawn once per submitted job: whether DescribeJobs and ListJobs will never show it."""
    glob = faults.vanish_job_name_glob
    return (glob is not None and fnmatch.fnmatchcase(job_name, glob)) or faults.draw(faults.vanish_rate)


def spot_reclaimed(faults: Faults, job: Job, attempt: Attempt) -> bool:
    """Whether this attempt's host is to be reclaimed (after `faults.spot_reclaim_after_seconds`)."""
    if attempt.number not in faults.spot_reclaim_attempts:
        return False
    glob = faults.spot_reclaim_job_name_glob
    return glob is None or fnmatch.fnmatchcase(job.name, glob)


def run_success_hooks(faults: Faults, s3: S3Client, job: Job, attempt: Attempt, env: dict[str, str]) -> None:
    """Run after an attempt exits 0 and before the job is reported SUCCEEDED."""
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
    for pattern in list(faults.delete_on_success_globs):
        _delete_matching(s3, pattern, info)
    for hook in list(faults.on_success_hooks):
        try:
            hook(info, s3)
        except Exception:  # a user hook must never kill the job engine; it is logged
            LOG.exception("batch emulator: success hook failed for job %s", job.job_id)


def _delete_matching(s3: S3Client, pattern: str, info: JobInfo) -> None:
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
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if fnmatch.fnmatchcase(obj["Key"], key_glob):
                    s3.delete_object(Bucket=bucket, Key=obj["Key"])
    except (ClientError, BotoCoreError):
        LOG.exception("batch emulator: deleting %s failed", expanded)
