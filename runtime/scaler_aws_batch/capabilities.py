"""What a task may ask for through Scaler capabilities, checked before any job is submitted.

A request that can never run (a negative or zero size, a timeout under the backend's minimum, a name the adapter
does not know, more than any instance of the queue offers) fails that task at once with :class:`CapabilityError`
naming what to fix; the adapter keeps serving every other task. Capabilities that Scaler 2.9.0's stock scheduler
lost on the way fail the task with :class:`CapabilitiesLostError`, which says to run ``scaler-batch scheduler``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from scaler_aws_batch.errors import CapabilitiesLostError, CapabilityError
from scaler_aws_batch.resources import ComputeCapacity, Resources

CAPABILITY_VCPUS: Final = "vcpus"
CAPABILITY_MEMORY: Final = "memory"  # MiB
CAPABILITY_GPU: Final = "gpu"
CAPABILITY_ON_DEMAND: Final = "on_demand"
CAPABILITY_TIMEOUT: Final = "timeout"  # seconds
TASK_CAPABILITIES: Final = (
    CAPABILITY_VCPUS,
    CAPABILITY_MEMORY,
    CAPABILITY_GPU,
    CAPABILITY_ON_DEMAND,
    CAPABILITY_TIMEOUT,
)
#: Scaler's "any amount" marker; a worker advertises it, and a client may pass it to mean "no particular amount".
SCALER_ANY: Final = -1


@dataclasses.dataclass(frozen=True)
class QueueRouting:
    """Which queue a task's job goes to. ``None`` means the backend's default queue."""

    on_demand: str | None = None
    gpu: str | None = None


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """A task's checked request: job resources, queue (None: the default) and timeout (None: the default)."""

    resources: Resources
    queue: str | None
    timeout_seconds: int | None


#: What a worker receives from Scaler 2.9.0's stock scheduler for a task with any capabilities: every name and
#: value dropped (see :mod:`scaler_aws_batch.scaler_compat`). No client can ask for a capability named "".
LOST_CAPABILITIES: Final = frozenset({""})
LOST_CAPABILITIES_HINT: Final = (
    "the scheduler dropped the task's capabilities (Scaler 2.9.0's scaler_scheduler forwards them to workers as "
    "[TaskCapability(name='', value=0)]), so the resources, queue and timeout it asked for are unknown; run "
    "`scaler-batch scheduler` instead of `scaler_scheduler` (a drop-in, same flags) and submit the task again"
)


def parse_capabilities(
    capabilities: Mapping[str, int], routing: QueueRouting, *, min_timeout_seconds: int = 1
) -> TaskRequest:
    """Check a task's capabilities and map them to its job. Raises :class:`CapabilityError` with what to fix, and
    :class:`CapabilitiesLostError` when the scheduler lost them on the way."""
    if set(capabilities) == LOST_CAPABILITIES:
        # Refused rather than run with the defaults: the task may need a GPU, more memory or On-Demand capacity.
        raise CapabilitiesLostError(LOST_CAPABILITIES_HINT)
    unknown = sorted(set(capabilities) - set(TASK_CAPABILITIES))
    if unknown:
        raise CapabilityError(
            f"unknown capability {', '.join(map(repr, unknown))}: this adapter understands "
            f"{', '.join(TASK_CAPABILITIES)}; remove it or fix its spelling"
        )

    def amount(name: str, *, zero_allowed: bool, unit: str) -> int | None:
        value = capabilities.get(name)
        if value is None or value == SCALER_ANY:
            return None
        if value < 0 or (value == 0 and not zero_allowed):
            raise CapabilityError(
                f"capability {name}={value} is impossible: give a positive number of {unit} or leave it out"
            )
        return value or None

    vcpus = amount(CAPABILITY_VCPUS, zero_allowed=False, unit="vCPUs")
    memory = amount(CAPABILITY_MEMORY, zero_allowed=False, unit="MiB")
    gpus = amount(CAPABILITY_GPU, zero_allowed=True, unit="GPUs")
    on_demand = amount(CAPABILITY_ON_DEMAND, zero_allowed=True, unit="(1 for On-Demand)")
    timeout = amount(CAPABILITY_TIMEOUT, zero_allowed=False, unit="seconds")
    if timeout is not None and timeout < min_timeout_seconds:
        raise CapabilityError(
            f"capability timeout={timeout} is below this backend's minimum of {min_timeout_seconds} seconds "
            f"(AWS Batch's attemptDurationSeconds); ask for at least {min_timeout_seconds}"
        )
    resources = Resources(vcpus=vcpus, memory_mib=memory, gpus=gpus)
    queue: str | None = None
    if gpus:
        if routing.gpu is None:
            raise CapabilityError(
                "the task asks for a GPU but this adapter has no GPU queue: start it with --gpu-queue"
            )
        queue = routing.gpu
    elif on_demand:
        if routing.on_demand is None:
            raise CapabilityError("the task asks for On-Demand capacity but this adapter has no --on-demand-queue")
        queue = routing.on_demand
    return TaskRequest(resources=resources, queue=queue, timeout_seconds=timeout)


def check_capacity(request: TaskRequest, capacity: ComputeCapacity | None, queue_name: str) -> None:
    """Refuse a request no instance type of the queue's compute environments can hold, naming the largest
    possible. ``None`` (unknown: unmanaged or Fargate environments) checks nothing."""
    if capacity is None or not capacity.shapes or any(shape.holds(request.resources) for shape in capacity.shapes):
        return
    wanted = request.resources
    asked = ", ".join(
        part
        for part in (
            f"vcpus={wanted.vcpus:g}" if wanted.vcpus is not None else "",
            f"memory={wanted.memory_mib} MiB" if wanted.memory_mib is not None else "",
            f"gpu={wanted.gpus}" if wanted.gpus else "",
        )
        if part
    )
    raise CapabilityError(
        f"no instance type of queue {queue_name}'s compute environments can run a job asking for {asked}; the "
        f"largest possible is {capacity.largest()}. Ask for less, or add a bigger instance type to the compute "
        "environment"
    )
