"""What a job asks for (:class:`Resources`) and what a queue can ever give (:class:`ComputeCapacity`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Resources:
    """Per-job resource request. ``None`` keeps the job definition's default."""

    vcpus: float | None = None
    memory_mib: int | None = None
    gpus: int | None = None

    def __post_init__(self) -> None:
        if self.vcpus is not None and self.vcpus <= 0:
            raise ValueError(f"vcpus must be positive, got {self.vcpus}")
        if self.memory_mib is not None and self.memory_mib <= 0:
            raise ValueError(f"memory (MiB) must be positive, got {self.memory_mib}")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError(f"gpu count must be zero or more, got {self.gpus}")


def resource_requirements(resources: Resources) -> list[dict[str, str]]:
    """``containerOverrides.resourceRequirements`` for ``resources``, in AWS's shape (values are strings)."""
    out: list[dict[str, str]] = []
    if resources.vcpus is not None:
        out.append({"type": "VCPU", "value": f"{resources.vcpus:g}"})
    if resources.memory_mib is not None:
        out.append({"type": "MEMORY", "value": str(resources.memory_mib)})
    if resources.gpus:
        out.append({"type": "GPU", "value": str(resources.gpus)})
    return out


@dataclasses.dataclass(frozen=True)
class InstanceShape:
    """One instance type a queue may launch, as far as a single job can use it."""

    name: str
    vcpus: float
    memory_mib: int
    gpus: int

    def holds(self, resources: Resources) -> bool:
        return (
            (resources.vcpus is None or resources.vcpus <= self.vcpus)
            and (resources.memory_mib is None or resources.memory_mib <= self.memory_mib)
            and (resources.gpus or 0) <= self.gpus
        )


@dataclasses.dataclass(frozen=True)
class ComputeCapacity:
    """The instance types a queue's compute environments may launch (vCPUs capped at their ``maxvCpus``)."""

    shapes: tuple[InstanceShape, ...]

    def largest(self) -> str:
        """The most each resource can be, and the instance types that give it."""

        def best(value: Callable[[InstanceShape], float]) -> InstanceShape:
            return max(self.shapes, key=value)

        vcpus, memory, gpus = best(lambda s: s.vcpus), best(lambda s: s.memory_mib), best(lambda s: s.gpus)
        return (
            f"vcpus={vcpus.vcpus:g} ({vcpus.name}), memory={memory.memory_mib} MiB ({memory.name}), "
            f"gpu={gpus.gpus} ({gpus.name})"
        )
