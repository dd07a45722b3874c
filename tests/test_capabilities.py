"""Task capabilities checked before any job exists: what can never run fails that task with what to change.

End to end (tests/test_e2e.py, tests/test_aws_e2e.py) the Scaler scheduler routes a task only to workers that
advertise all its capability names, so an unknown name never reaches the adapter there; it is checked here."""

from __future__ import annotations

import pytest

from scaler_aws_batch.capabilities import QueueRouting, TaskRequest, check_capacity, parse_capabilities
from scaler_aws_batch.errors import CapabilitiesLostError, CapabilityError, SubmitError
from scaler_aws_batch.resources import ComputeCapacity, InstanceShape, Resources

ROUTING = QueueRouting(on_demand="od-queue", gpu="gpu-queue")


@pytest.mark.parametrize(
    ("capabilities", "message"),
    [
        ({"cpus": 2}, "unknown capability 'cpus'"),
        ({"vcpus": -2}, "vcpus=-2 is impossible"),
        ({"vcpus": 0}, "vcpus=0 is impossible"),
        ({"memory": 0}, "memory=0 is impossible"),
        ({"gpu": -2}, "gpu=-2 is impossible"),
        ({"timeout": 0}, "timeout=0 is impossible"),
        ({"timeout": 59}, "timeout=59 is below this backend's minimum of 60"),
    ],
)
def test_impossible_values_are_refused_with_what_to_change(capabilities: dict[str, int], message: str) -> None:
    with pytest.raises(CapabilityError, match=message) as caught:
        parse_capabilities(capabilities, ROUTING, min_timeout_seconds=60)
    assert isinstance(caught.value, SubmitError)


def test_valid_values_map_to_resources_queue_and_timeout() -> None:
    request = parse_capabilities({"vcpus": 4, "memory": 8192, "timeout": 60, "on_demand": 1}, ROUTING)
    assert request == TaskRequest(Resources(vcpus=4, memory_mib=8192), "od-queue", 60)
    assert parse_capabilities({"gpu": 1}, ROUTING).queue == "gpu-queue"
    # Scaler's -1 ("any amount") and zero GPUs or On-Demand keep the defaults.
    assert parse_capabilities({"vcpus": -1, "gpu": 0, "on_demand": 0}, ROUTING) == TaskRequest(Resources(), None, None)


def test_capabilities_lost_by_the_stock_scheduler_say_to_run_scaler_batch_scheduler() -> None:
    """Scaler 2.9.0's scaler_scheduler forwards {"vcpus": 2, ...} as [TaskCapability(name='', value=0)]."""
    with pytest.raises(CapabilitiesLostError) as caught:
        parse_capabilities({"": 0}, ROUTING)
    message = str(caught.value)
    assert isinstance(caught.value, CapabilityError)
    assert "scheduler dropped the task's capabilities" in message and "scaler-batch scheduler" in message
    assert "spelling" not in message
    assert parse_capabilities({}, ROUTING) == TaskRequest(Resources(), None, None)  # none asked: nothing was lost


def test_gpu_without_a_gpu_queue_is_refused() -> None:
    with pytest.raises(CapabilityError, match="--gpu-queue"):
        parse_capabilities({"gpu": 1}, QueueRouting())


def test_capacity_names_the_largest_possible() -> None:
    capacity = ComputeCapacity(shapes=(InstanceShape("m5.large", 2, 8192, 0), InstanceShape("r5.large", 2, 16384, 0)))
    check_capacity(TaskRequest(Resources(vcpus=2, memory_mib=16384), None, None), capacity, "q")
    with pytest.raises(CapabilityError, match=r"largest possible is vcpus=2 \(m5.large\), memory=16384 MiB") as caught:
        check_capacity(TaskRequest(Resources(vcpus=2, memory_mib=16385), None, None), capacity, "q")
    assert "memory=16385 MiB" in str(caught.value)
    check_capacity(TaskRequest(Resources(vcpus=64), None, None), None, "q")  # unknown capacity: not checked
