"""The largest job each queue can ever place, read once at start: DescribeJobQueues, DescribeComputeEnvironments
(one call for all of them) and EC2 DescribeInstanceTypes for the instance types they may launch.

A request beyond every instance type of a queue's compute environments would sit in RUNNABLE for ever (or until the
queue's RUNNABLE timeout), so the adapter refuses it at submit and names the largest possible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from scaler_aws_batch.resources import ComputeCapacity, InstanceShape, Resources

logger = logging.getLogger(__name__)

#: What ``optimal`` (and the newer ``default_x86_64``) lets Batch choose from, per AWS Batch's compute environment
#: documentation: the C, M and R families of the generation offered in the region.
OPTIMAL_FAMILIES: Final = ("c4", "m4", "r4", "c5", "m5", "r5", "c6i", "m6i", "r6i", "c7i", "m7i", "r7i")
_OPTIMAL_NAMES: Final = frozenset({"optimal", "default_x86_64"})

#: ``call(operation, request)``: one AWS call through the shared call layer.
Call = Callable[[str, Callable[[], Any]], Any]


def _patterns(instance_types: Iterable[str]) -> list[str]:
    """DescribeInstanceTypes filter values: exact types as given, families (``m5``) as ``m5.*``."""
    patterns: list[str] = []
    for name in instance_types:
        if name in _OPTIMAL_NAMES:
            patterns.extend(f"{family}.*" for family in OPTIMAL_FAMILIES)
        elif "." in name:
            patterns.append(name)
        else:
            patterns.append(f"{name}.*")
    return sorted(set(patterns))


def instance_shapes(call: Call, ec2: Any, instance_types: Iterable[str]) -> tuple[InstanceShape, ...]:
    """vCPUs, memory and GPUs of each instance type the names (types, families, ``optimal``) stand for."""
    patterns = _patterns(instance_types)
    if not patterns:
        return ()
    shapes: list[InstanceShape] = []
    kwargs: dict[str, Any] = {"Filters": [{"Name": "instance-type", "Values": patterns}]}
    while True:
        page = call("DescribeInstanceTypes", lambda: ec2.describe_instance_types(**kwargs))
        for item in page.get("InstanceTypes", []):
            gpus = sum(int(gpu.get("Count", 0)) for gpu in item.get("GpuInfo", {}).get("Gpus", []))
            shapes.append(
                InstanceShape(
                    name=str(item["InstanceType"]),
                    vcpus=float(item.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
                    memory_mib=int(item.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                    gpus=gpus,
                )
            )
        token = page.get("NextToken")
        if not token:
            return tuple(shapes)
        kwargs["NextToken"] = token


def queue_capacities(
    call: Call, batch: Any, ec2_factory: Callable[[], Any], queues: Mapping[str, Mapping[str, Any]]
) -> dict[str, ComputeCapacity | None]:
    """Each queue's capacity from its compute environments (``queues``: DescribeJobQueues entries by the name the
    worker was given). None for a queue whose environments are unmanaged or Fargate, or not described: the
    request is then not checked here."""
    environment_arns = sorted(
        {
            str(order["computeEnvironment"])
            for queue in queues.values()
            for order in queue.get("computeEnvironmentOrder", [])
        }
    )
    if not environment_arns:
        return dict.fromkeys(queues)
    described = call(
        "DescribeComputeEnvironments", lambda: batch.describe_compute_environments(computeEnvironments=environment_arns)
    )
    environments: dict[str, Mapping[str, Any]] = {}
    for environment in described.get("computeEnvironments", []):
        environments[str(environment.get("computeEnvironmentArn"))] = environment
        environments[str(environment.get("computeEnvironmentName"))] = environment
    ec2: Any = None
    capacities: dict[str, ComputeCapacity | None] = {}
    for name, queue in queues.items():
        shapes: list[InstanceShape] = []
        checkable = True
        for order in queue.get("computeEnvironmentOrder", []):
            environment = environments.get(str(order["computeEnvironment"]))
            resources = (environment or {}).get("computeResources") or {}
            if environment is None or environment.get("type") != "MANAGED" or resources.get("type") not in (
                "EC2", "SPOT"
            ):  # fmt: skip
                checkable = False  # unmanaged or Fargate: no instance list to check against
                break
            ec2 = ec2 if ec2 is not None else ec2_factory()
            max_vcpus = float(resources.get("maxvCpus", 0)) or None
            for shape in instance_shapes(call, ec2, resources.get("instanceTypes", [])):
                vcpus = min(shape.vcpus, max_vcpus) if max_vcpus is not None else shape.vcpus
                shapes.append(InstanceShape(shape.name, vcpus, shape.memory_mib, shape.gpus))
        capacities[name] = ComputeCapacity(shapes=tuple(shapes)) if checkable and shapes else None
        if capacities[name] is not None:
            logger.info("queue %s: %d instance types, largest %s", name, len(shapes),
                        capacities[name].largest())  # type: ignore[union-attr]  # fmt: skip
    return capacities


def describe_queues(call: Call, batch: Any, names: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """DescribeJobQueues for ``names`` (names or ARNs), keyed by the name as given; missing queues are left out."""
    response = call("DescribeJobQueues", lambda: batch.describe_job_queues(jobQueues=list(names)))
    found: dict[str, Mapping[str, Any]] = {}
    for queue in response.get("jobQueues", []):
        for name in names:
            if name in (queue.get("jobQueueName"), queue.get("jobQueueArn")):
                found[name] = queue
    return found


def explain_runnable(
    call: Call, batch: Any, queue_name: str, resources: Resources, capacity: ComputeCapacity | None
) -> str:
    """The queue's and its compute environments' state and status reasons, then the likeliest reason a job asking
    for ``resources`` waits in RUNNABLE."""
    queue = describe_queues(call, batch, [queue_name]).get(queue_name)
    if queue is None:
        return f"queue {queue_name} no longer exists. Diagnosis: the job can never start; its queue was deleted"
    parts = [
        f"queue {queue_name} is {queue.get('state')}/{queue.get('status')} "
        f"({queue.get('statusReason') or 'no status reason'})"
    ]
    arns = [str(order["computeEnvironment"]) for order in queue.get("computeEnvironmentOrder", [])]
    diagnosis: str | None = None
    if queue.get("state") != "ENABLED" or queue.get("status") != "VALID":
        diagnosis = "the queue does not dispatch jobs while it is not ENABLED and VALID"
    described = call(
        "DescribeComputeEnvironments", lambda: batch.describe_compute_environments(computeEnvironments=arns)
    )
    for environment in described.get("computeEnvironments", []):
        name = environment.get("computeEnvironmentName")
        resources_of = environment.get("computeResources") or {}
        desired, maximum = resources_of.get("desiredvCpus"), resources_of.get("maxvCpus")
        parts.append(
            f"compute environment {name} is {environment.get('state')}/{environment.get('status')} "
            f"({environment.get('statusReason') or 'no status reason'})"
            + (f", desiredvCpus {desired} of maxvCpus {maximum}" if maximum is not None else "")
        )
        if diagnosis is None and (environment.get("state") != "ENABLED" or environment.get("status") != "VALID"):
            diagnosis = f"compute environment {name} cannot launch instances until it is ENABLED and VALID"
        if diagnosis is None and maximum is not None and desired is not None and desired >= maximum:
            diagnosis = (
                f"compute environment {name} is at its maxvCpus ({maximum}): the job waits for running jobs to "
                "finish; raise max_vcpus (cdk.json) if this is the normal load"
            )
    if diagnosis is None and capacity is not None and not any(shape.holds(resources) for shape in capacity.shapes):
        diagnosis = f"no instance type of the queue can hold the job; the largest possible is {capacity.largest()}"
    if diagnosis is None:
        diagnosis = (
            "instances are still being launched, or EC2 has too little Spot capacity in these instance types; the "
            "queue cancels jobs that stay RUNNABLE past its job-state time limit"
        )
    return "; ".join(parts) + f". Diagnosis: {diagnosis}"
