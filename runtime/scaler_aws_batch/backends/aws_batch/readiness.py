"""Start-up readiness of the AWS Batch backend: regions match, queues ENABLED and VALID, the job definition ACTIVE
and naming the signing secret; and the queues' capacity, read once on the way."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import botocore.exceptions

from scaler_aws_batch.aws_calls import AwsCalls, error_code
from scaler_aws_batch.aws_clients import BatchClients
from scaler_aws_batch.backends.aws_batch.capacity import describe_queues, queue_capacities
from scaler_aws_batch.backends.aws_batch.job_definition import JobDefinitionInfo
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV
from scaler_aws_batch.errors import BackendError
from scaler_aws_batch.resources import ComputeCapacity

logger = logging.getLogger(__name__)


def check_regions(references: Sequence[tuple[str, str]], region: str | None) -> None:
    """``references``: (kind, name or ARN), kind such as ``job queue``; an ARN of another region than the worker's
    is refused, saying both ways to fix it."""
    for kind, reference in references:
        arn_region = reference.split(":")[3] if reference.startswith("arn:") else None
        if arn_region and region and arn_region != region:
            raise BackendError(
                f"{kind} {reference} is in region {arn_region} but the worker uses region {region}: run the "
                f"worker in {arn_region} (--region {arn_region} or AWS_REGION={arn_region}), or point it at a "
                f"{kind} in {region}"
            )


def check_job_definition(info: JobDefinitionInfo, reference: str) -> None:
    if info.status != "ACTIVE":
        raise BackendError(
            f"job definition {reference} is {info.status}; register a new revision or point "
            "--job-definition at an ACTIVE one (the stack output JobDefinitionArn)"
        )
    if SIGNING_SECRET_ENV not in info.environment_names:
        raise BackendError(
            f"job definition {reference} does not set {SIGNING_SECRET_ENV} in its environment, so "
            "its jobs cannot read the signing key and would refuse every payload: redeploy the stack, or add "
            "the variable naming the same secret as --signing-secret"
        )


def check_queues(
    calls: AwsCalls, clients: BatchClients, names: Sequence[str], region: str | None
) -> dict[str, Mapping[str, Any]]:
    """Every queue in ``names`` exists, ENABLED and VALID. Returns each queue as DescribeJobQueues describes it."""
    try:
        found = describe_queues(calls.call, clients.batch, names)
    except botocore.exceptions.ClientError as exc:
        raise BackendError(f"DescribeJobQueues failed ({error_code(exc)}); check --region and the queues") from exc
    for name in names:
        queue = found.get(name)
        if queue is None:
            raise BackendError(
                f"job queue {name} does not exist in region {region}: check --job-queue / "
                "--on-demand-queue / --gpu-queue and --region, or deploy the stack"
            )
        state, status = queue.get("state"), queue.get("status")
        if state != "ENABLED" or status != "VALID":
            raise BackendError(
                f"job queue {name} is {state} and {status} ({queue.get('statusReason') or 'no reason given'}); "
                "it must be ENABLED and VALID: enable it (aws batch update-job-queue --state ENABLED) or fix its "
                "compute environments"
            )
    return found


def queue_capacities_or_unknown(
    calls: AwsCalls, clients: BatchClients, found: Mapping[str, Mapping[str, Any]]
) -> dict[str, ComputeCapacity | None]:
    """The largest job each described queue can run (all unknown when its compute environments cannot be read)."""
    try:
        return queue_capacities(calls.call, clients.batch, clients.ec2, found)
    except botocore.exceptions.ClientError as exc:
        # The size check is a convenience; a worker whose policy predates it still serves.
        logger.warning("cannot read the queues' compute environments (%s); requests are not size-checked",
                       error_code(exc))  # fmt: skip
        return dict.fromkeys(found)
