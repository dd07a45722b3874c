"""What an AWS Batch job used, read from its DescribeJobs entry, and where it ran.

DescribeJobs does not name the compute environment, but each attempt names its ECS task, whose ARN
(``arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID``) names the ECS cluster, and every Batch compute environment has its
own cluster (``ecsClusterArn`` in DescribeComputeEnvironments, with the environment's type: EC2, SPOT, FARGATE or
FARGATE_SPOT). :class:`ComputePlacements` caches that mapping and asks again, rarely, for a cluster it has not seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

import botocore.exceptions

from scaler_aws_batch.aws_calls import AwsCalls
from scaler_aws_batch.aws_clients import BatchClients
from scaler_aws_batch.errors import BackendError
from scaler_aws_batch.usage import ComputeKind, JobUsage

logger = logging.getLogger(__name__)

MILLISECONDS: Final = 1000.0
#: How often an unknown cluster may trigger another DescribeComputeEnvironments (a new environment, a CE replaced).
REFRESH_INTERVAL_SECONDS: Final = 60.0


def cluster_name(task_arn: str | None) -> str | None:
    """``CLUSTER`` from ``arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID``; None for the old format without it."""
    if not task_arn or ":task/" not in task_arn:
        return None
    parts = task_arn.split(":task/", 1)[1].split("/")
    return parts[0] if len(parts) == 2 else None


def describe_compute_environments(calls: AwsCalls, clients: BatchClients) -> list[Mapping[str, Any]]:
    """Every compute environment (all pages); nothing when the call is refused, so usage says "unknown"."""
    environments: list[Mapping[str, Any]] = []
    kwargs: dict[str, Any] = {}
    try:
        while True:
            page = calls.call(
                "DescribeComputeEnvironments", lambda: clients.batch.describe_compute_environments(**kwargs)
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


class ComputePlacements:
    """ECS cluster name -> (compute kind, compute environment name). ``describe_environments`` returns the
    ``computeEnvironments`` entries of DescribeComputeEnvironments (every page)."""

    def __init__(
        self,
        describe_environments: Callable[[], Iterable[Mapping[str, Any]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._describe = describe_environments
        self._clock = clock
        self._lock = threading.Lock()
        self._by_cluster: dict[str, tuple[ComputeKind, str | None]] = {}
        self._by_environment: dict[str, tuple[ComputeKind, str | None]] = {}
        self._refreshed_at: float | None = None

    def __call__(self, cluster: str) -> tuple[ComputeKind, str | None]:
        return self._lookup(self._by_cluster, cluster)

    def by_environment(self, name: str) -> ComputeKind:
        """The compute kind of the environment named ``name`` (what a job's runner reads from ``AWS_BATCH_CE_NAME``)."""
        return self._lookup(self._by_environment, name)[0]

    def _lookup(self, table: Mapping[str, tuple[ComputeKind, str | None]], key: str) -> tuple[ComputeKind, str | None]:
        with self._lock:
            found = table.get(key)
            now = self._clock()
            if found is None and (self._refreshed_at is None or now - self._refreshed_at >= REFRESH_INTERVAL_SECONDS):
                self._refreshed_at = now
                self._refresh()
                found = table.get(key)
            return found if found is not None else (ComputeKind.UNKNOWN, None)

    def _refresh(self) -> None:
        for environment in self._describe():
            kind = ComputeKind.from_compute_environment(
                environment.get("type"), (environment.get("computeResources") or {}).get("type")
            )
            name = environment.get("computeEnvironmentName")
            if name:
                self._by_environment[str(name)] = (kind, str(name))
            arn = environment.get("ecsClusterArn")
            if arn:
                self._by_cluster[str(arn).rsplit("/", 1)[-1]] = (kind, name)


def _seconds(milliseconds: object) -> float | None:
    return float(milliseconds) / MILLISECONDS if isinstance(milliseconds, int | float) else None


def job_usage(job: Mapping[str, Any], placements: Callable[[str], tuple[ComputeKind, str | None]]) -> JobUsage:
    """The usage of one finished job (or array child) from its DescribeJobs entry."""
    container = job.get("container") or {}
    requirements = {r.get("type"): r.get("value") for r in container.get("resourceRequirements") or []}
    vcpus = float(requirements.get("VCPU") or container.get("vcpus") or 0)
    memory_mib = int(float(requirements.get("MEMORY") or container.get("memory") or 0))
    gpus = int(float(requirements.get("GPU") or 0))
    attempts = list(job.get("attempts") or [])
    run_seconds = 0.0
    for attempt in attempts:
        started, stopped = _seconds(attempt.get("startedAt")), _seconds(attempt.get("stoppedAt"))
        if started is not None and stopped is not None:
            run_seconds += max(0.0, stopped - started)
    started_at, stopped_at = _seconds(job.get("startedAt")), _seconds(job.get("stoppedAt"))
    if not attempts and started_at is not None and stopped_at is not None:
        run_seconds = max(0.0, stopped_at - started_at)
    last = attempts[-1] if attempts else {}
    cluster = cluster_name((last.get("container") or {}).get("taskArn") or container.get("taskArn"))
    compute, environment = placements(cluster) if cluster is not None else (ComputeKind.UNKNOWN, None)
    return JobUsage(
        queue=job.get("jobQueue"),
        compute=compute,
        compute_environment=environment,
        vcpus=vcpus,
        memory_mib=memory_mib,
        gpus=gpus,
        attempts=len(attempts),
        created_at=_seconds(job.get("createdAt")),
        started_at=started_at,
        stopped_at=stopped_at,
        run_seconds=run_seconds,
    )
