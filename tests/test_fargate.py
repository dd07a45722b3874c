"""Fargate's rules on the runtime side: the allowed vCPU/memory combinations (refused with the nearest valid one named),
no GPUs, and Fargate Spot interruptions retried like EC2 Spot reclaims. The AWS backend checks a task's size before
SubmitJob; the Batch emulator refuses what AWS refuses, so both are exercised through boto3 over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_emulator import BatchEmulator, EmulatorConfig, Faults
from batch_emulator.testing import wait_for_status
from scaler_aws_batch import fargate
from scaler_aws_batch.backends.aws_batch.backend import AwsBatchBackend
from scaler_aws_batch.backends.base import JobSpec, JobState, JobStatus
from scaler_aws_batch.contracts import SPOT_RETRY_EVALUATE_ON_EXIT
from scaler_aws_batch.engine import classify_failure
from scaler_aws_batch.errors import JobRejectedError, SpotRetriesExhaustedError
from scaler_aws_batch.resources import Resources

SPOT_RETRY = {"attempts": 3, "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT)}
SLEEP = "import sys, time; time.sleep(float(sys.argv[1]))"


# --- the combinations ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpus", "memory", "valid"),
    [
        (0.25, 512, True),
        (0.25, 1536, False),  # not listed by AWS although between 1024 and 2048
        (0.5, 4096, True),
        (1, 8192, True),
        (1, 9216, False),
        (4, 30720, True),
        (8, 20480, True),
        (8, 18432, False),  # 8 vCPUs take 4 GiB steps
        (16, 122880, True),
        (3, 8192, False),
    ],
)
def test_allowed_combinations_follow_aws_table(vcpus: float, memory: int, valid: bool) -> None:
    assert fargate.is_valid(vcpus, memory) is valid


def test_nearest_combination_covers_the_request_with_least_excess() -> None:
    assert str(fargate.nearest(1, 16384)) == "vcpus=2, memory=16384"
    assert str(fargate.nearest(0.25, 1536)) == "vcpus=0.25, memory=2048"
    assert str(fargate.nearest(3, 4096)) == "vcpus=4, memory=8192"
    assert str(fargate.nearest(32, 4096)) == "vcpus=16, memory=122880"  # beyond Fargate: the largest it has
    message = fargate.check(1, 16384)
    assert message is not None and "nearest valid combination is vcpus=2, memory=16384" in message
    assert fargate.check(2, 16384) is None
    assert fargate.check(1, 2048, gpus=1) == fargate.GPU_REFUSAL


# --- the emulator ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[BatchEmulator]:
    with BatchEmulator(EmulatorConfig(max_running_jobs=4), Faults(seed=11)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def fargate_world(emu: BatchEmulator) -> tuple[str, str]:
    """A queue and a Fargate job definition (1 vCPU, 2048 MiB) running a short sleep with the Spot retry rules."""
    return emu.create_queue_and_job_definition(
        queue_name="fargate-queue",
        job_definition_name="fargate-job",
        command=["python3", "-c", SLEEP, "0.1"],
        retry_strategy=SPOT_RETRY,
        fargate=True,
    )


def _requirements(vcpus: str, memory: str) -> list[Any]:
    return [{"type": "VCPU", "value": vcpus}, {"type": "MEMORY", "value": memory}]


def test_emulator_refuses_a_fargate_job_definition_of_an_invalid_size(emu: BatchEmulator) -> None:
    batch = emu.client("batch", max_attempts=1)
    container: Any = {"image": "runner", "command": ["true"], "resourceRequirements": _requirements("1", "1024")}
    with pytest.raises(ClientError) as caught:
        batch.register_job_definition(
            jobDefinitionName="too-small",
            type="container",
            platformCapabilities=["FARGATE"],
            containerProperties=container,
        )
    assert caught.value.response["Error"]["Code"] == "ClientException"
    assert "vcpus=1, memory=2048" in caught.value.response["Error"]["Message"]
    container["resourceRequirements"] = _requirements("1", "2048")
    registered = batch.register_job_definition(
        jobDefinitionName="right-size",
        type="container",
        platformCapabilities=["FARGATE"],
        containerProperties=container,
    )
    (definition,) = batch.describe_job_definitions(jobDefinitions=[registered["jobDefinitionArn"]])["jobDefinitions"]
    assert definition["platformCapabilities"] == ["FARGATE"]


def test_emulator_refuses_invalid_fargate_overrides_at_submit_and_runs_valid_ones(
    emu: BatchEmulator, fargate_world: tuple[str, str]
) -> None:
    queue, definition = fargate_world
    batch = emu.client("batch", max_attempts=1)
    refused: list[list[Any]] = [_requirements("1", "16384"), [{"type": "GPU", "value": "1"}]]
    for requirements in refused:
        with pytest.raises(ClientError) as caught:
            batch.submit_job(
                jobName="bad-size",
                jobQueue=queue,
                jobDefinition=definition,
                containerOverrides={"resourceRequirements": requirements},
            )
        assert caught.value.response["Error"]["Code"] == "ClientException"
    job_id = batch.submit_job(
        jobName="good-size",
        jobQueue=queue,
        jobDefinition=definition,
        containerOverrides={"resourceRequirements": _requirements("2", "16384")},
    )["jobId"]
    assert wait_for_status(batch, job_id)["status"] == "SUCCEEDED"


def _run_interrupted(emu: BatchEmulator, world: tuple[str, str], name: str, attempts: set[int]) -> dict[str, Any]:
    """Run one job whose ``attempts`` lose their Fargate Spot capacity; return it described once final."""
    queue, definition = world
    emu.faults.spot_reclaim_attempts = attempts
    emu.faults.spot_reclaim_job_name_glob = name
    try:
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName=name, jobQueue=queue, jobDefinition=definition)["jobId"]
        return dict(wait_for_status(batch, job_id))
    finally:
        emu.faults.spot_reclaim_attempts = set()


def test_fargate_spot_interruption_is_retried_with_its_own_status_reason(
    emu: BatchEmulator, fargate_world: tuple[str, str]
) -> None:
    job = _run_interrupted(emu, fargate_world, "interrupted-once", {1})
    assert job["status"] == "SUCCEEDED"
    first, second = job["attempts"]
    assert first["statusReason"] == "Your Spot Task was interrupted."
    assert second["container"]["exitCode"] == 0


def test_every_attempt_interrupted_reads_as_spot_retries_exhausted(
    emu: BatchEmulator, fargate_world: tuple[str, str]
) -> None:
    job = _run_interrupted(emu, fargate_world, "doomed", {1, 2, 3})
    job_id = job["jobId"]
    assert job["status"] == "FAILED" and len(job["attempts"]) == 3
    error = classify_failure(
        JobStatus(job_id=job_id, state=JobState.FAILED, status_reason=job["statusReason"], attempts=3), []
    )
    assert isinstance(error, SpotRetriesExhaustedError)
    assert "Fargate Spot" in str(error) and "on_demand=1" in str(error)


# --- the AWS backend ---------------------------------------------------------------------------------------------


def _spec(name: str, resources: Resources) -> JobSpec:
    return JobSpec(name=name, payload="inline:e30=", resources=resources, timeout_seconds=60, tags={})


def test_backend_refuses_a_fargate_size_before_submitting(emu: BatchEmulator, fargate_world: tuple[str, str]) -> None:
    queue, definition = fargate_world
    backend = AwsBatchBackend(
        job_queue=queue,
        job_definition=definition,
        batch_client=emu.client("batch", max_attempts=1),
        logs_client=emu.client("logs"),
    )
    try:
        with pytest.raises(JobRejectedError, match=r"nearest valid combination is vcpus=2, memory=16384"):
            backend.submit(_spec("too-much-memory", Resources(vcpus=1, memory_mib=16384)))
        # Only memory given: the job definition's 1 vCPU is the other half of the pair.
        with pytest.raises(JobRejectedError, match=r"vcpus=1 with memory=9216 MiB.*vcpus=2, memory=9216"):
            backend.submit(_spec("odd-memory", Resources(memory_mib=9216)))
        with pytest.raises(JobRejectedError, match="Fargate has no GPUs"):
            backend.submit(_spec("wants-gpu", Resources(gpus=1)))
        assert backend.api_calls["SubmitJob"] == 0, "refused sizes never reach AWS"
        job_id = backend.submit(_spec("fits", Resources(memory_mib=8192)))
        assert backend.api_calls["SubmitJob"] == 1
        batch = emu.client("batch")
        (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
        assert job["jobDefinition"] == definition
    finally:
        backend.close()


def test_backend_leaves_ec2_sizes_to_the_instances(emu: BatchEmulator) -> None:
    queue, definition = emu.create_queue_and_job_definition(
        queue_name="ec2-queue", job_definition_name="ec2-job", command=["true"]
    )
    backend = AwsBatchBackend(
        job_queue=queue,
        job_definition=definition,
        batch_client=emu.client("batch", max_attempts=1),
        logs_client=emu.client("logs"),
    )
    try:
        backend.submit(_spec("ec2-odd-size", Resources(vcpus=3, memory_mib=9000)))  # no Fargate rule on EC2
        assert backend.api_calls["SubmitJob"] == 1
    finally:
        backend.close()
