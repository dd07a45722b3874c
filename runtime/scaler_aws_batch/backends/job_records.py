"""Job-record files: one JSON file per submitted job in a backend's work directory (``jobs/<job id>.json``), so a
restarted adapter on the same directory finds its jobs, their array sizes and their task ids again.

For backends that keep jobs on this machine or a shared filesystem (local processes, Slurm). The record holds the
job's spec without the payload (which holds the task's arguments): how the payload travelled and its length only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time

from scaler_aws_batch.backends.base import JobSpec
from scaler_aws_batch.resources import Resources, resource_requirements

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RecordedJob:
    job_id: str
    name: str
    array_size: int | None
    timeout_seconds: int
    task_ids: tuple[str, ...]
    queue: str | None
    resources: Resources


def write_job_record(directory: pathlib.Path, job_id: str, spec: JobSpec) -> None:
    record = {
        "jobId": job_id,
        "jobName": spec.name,
        "createdAt": time.time_ns() // 1_000_000,
        "queue": spec.queue,
        "arraySize": spec.array_size,
        "timeoutSeconds": spec.timeout_seconds,
        "resourceRequirements": resource_requirements(spec.resources),
        "tags": dict(spec.tags),
        "taskIds": list(spec.task_ids),
        # How the payload travelled, never the payload itself (it holds the task's arguments).
        "payloadScheme": spec.payload.partition(":")[0],
        "payloadChars": len(spec.payload),
    }
    (directory / f"{job_id}.json").write_text(json.dumps(record, indent=2))


def _resources(requirements: list[dict[str, str]]) -> Resources:
    values = {item["type"]: item["value"] for item in requirements}
    return Resources(
        vcpus=float(values["VCPU"]) if "VCPU" in values else None,
        memory_mib=int(values["MEMORY"]) if "MEMORY" in values else None,
        gpus=int(values["GPU"]) if "GPU" in values else None,
    )


def read_job_records(directory: pathlib.Path, name_prefix: str = "") -> list[RecordedJob]:
    """Every readable record whose job name starts with ``name_prefix``, in file-name order; an unreadable one is
    logged and skipped."""
    found: list[RecordedJob] = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            name = str(record.get("jobName", ""))
            if not name.startswith(name_prefix):
                continue
            size = record.get("arraySize")
            found.append(
                RecordedJob(
                    job_id=str(record["jobId"]),
                    name=name,
                    array_size=int(size) if size is not None else None,
                    timeout_seconds=int(record.get("timeoutSeconds", 3600)),
                    task_ids=tuple(str(task_id) for task_id in record.get("taskIds", ())),
                    queue=record.get("queue"),
                    resources=_resources(record.get("resourceRequirements", [])),
                )
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring unreadable job record %s: %s", path, exc)
    return found
