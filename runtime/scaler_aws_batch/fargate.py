"""AWS Fargate's allowed vCPU/memory combinations, shared by the stack (job defaults), the AWS backend (per-task
overrides, checked at submit) and the emulator (which refuses what AWS refuses).

Source: the ``resourceRequirements`` value rules in the AWS Batch API reference,
https://docs.aws.amazon.com/batch/latest/APIReference/API_ResourceRequirement.html (copied in docs/deploy.md).
"""

from __future__ import annotations

import dataclasses
from typing import Final

#: Fargate has no GPUs (same API reference: "GPUs aren't available for jobs that are running on Fargate resources").
GPU_REFUSAL: Final = "Fargate has no GPUs: submit GPU tasks to a stack with compute=ec2 and gpu_queue=true"

#: vCPUs -> (smallest, largest, step) of the memory in MiB that Fargate accepts with them.
MEMORY_RANGES_MIB: Final[dict[float, tuple[int, int, int]]] = {
    0.25: (512, 2048, 512),  # 512, 1024, 2048 (1536 is not listed by AWS; filtered below)
    0.5: (1024, 4096, 1024),
    1.0: (2048, 8192, 1024),
    2.0: (4096, 16384, 1024),
    4.0: (8192, 30720, 1024),
    8.0: (16384, 61440, 4096),
    16.0: (32768, 122880, 8192),
}
_NOT_LISTED: Final = {(0.25, 1536)}


def allowed_memory_mib(vcpus: float) -> tuple[int, ...]:
    """The memory sizes (MiB) Fargate accepts with ``vcpus``; empty when ``vcpus`` itself is not a Fargate size."""
    bounds = MEMORY_RANGES_MIB.get(float(vcpus))
    if bounds is None:
        return ()
    low, high, step = bounds
    return tuple(size for size in range(low, high + 1, step) if (float(vcpus), size) not in _NOT_LISTED)


def is_valid(vcpus: float, memory_mib: int) -> bool:
    return memory_mib in allowed_memory_mib(vcpus)


@dataclasses.dataclass(frozen=True)
class Combination:
    vcpus: float
    memory_mib: int

    def __str__(self) -> str:
        return f"vcpus={self.vcpus:g}, memory={self.memory_mib}"


def nearest(vcpus: float, memory_mib: int) -> Combination:
    """The valid combination that covers the request with the least excess: at least ``vcpus`` and ``memory_mib``
    when Fargate has one that large (the smallest such, fewest vCPUs first), otherwise the largest one."""
    candidates = [
        Combination(size, memory) for size in sorted(MEMORY_RANGES_MIB) for memory in allowed_memory_mib(size)
    ]
    covering = [item for item in candidates if item.vcpus >= vcpus and item.memory_mib >= memory_mib]
    if covering:
        return min(covering, key=lambda item: (item.vcpus, item.memory_mib))
    return max(candidates, key=lambda item: (item.vcpus, item.memory_mib))


def check(vcpus: float, memory_mib: int, *, gpus: int = 0) -> str | None:
    """``None`` when Fargate accepts the request, else a message that names the nearest valid combination."""
    if gpus:
        return GPU_REFUSAL
    if is_valid(vcpus, memory_mib):
        return None
    return (
        f"Fargate does not accept vcpus={vcpus:g} with memory={memory_mib} MiB; the nearest valid combination is "
        f"{nearest(vcpus, memory_mib)}: ask for that (the task's vcpus and memory capabilities, or the stack's "
        "job_vcpus and job_memory_mib); Fargate takes vcpus 0.25, 0.5, 1, 2, 4, 8 or 16, each with its own memory "
        "range (docs/deploy.md, 'Fargate job sizes')"
    )
