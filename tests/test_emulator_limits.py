"""The emulator rejects what AWS Batch rejects, with AWS's error code and message (over HTTP, with boto3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_emulator import BatchEmulator, EmulatorConfig
from batch_emulator.testing import wait_for_status
from scaler_aws_batch.contracts import StatusReason


@pytest.fixture(scope="module")
def module_emu() -> Iterator[BatchEmulator]:
    with BatchEmulator(EmulatorConfig()) as emulator:
        yield emulator


@pytest.fixture
def emu(module_emu: BatchEmulator) -> BatchEmulator:
    module_emu.reset_api_calls()
    return module_emu


@pytest.fixture(scope="module")
def resources(module_emu: BatchEmulator) -> tuple[str, str]:
    return module_emu.create_queue_and_job_definition(
        command=["python3", "-c", "import sys; print(len(sys.argv))", "Ref::payload"]
    )


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: Any = exc.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_submit_job_over_30_kib_is_rejected(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="big", jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "x" * 31_000})
    assert _error(exc) == ("ClientException", "Job size must be less than 30 KiB", 400)
    assert emu.api_calls["SubmitJob"] == 1
    assert all(
        job["jobName"] != "big"
        for job in emu.client("batch").list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["big"]}])[
            "jobSummaryList"
        ]
    )


def test_container_overrides_over_8192_fail_when_the_job_starts(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    # ~9 KB: far under the 30 KiB request limit, so SubmitJob accepts it ...
    too_long = batch.submit_job(
        jobName="long", jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "y" * 9000}
    )
    # ... and a payload that fits the 8,192-character budget runs.
    fits = batch.submit_job(jobName="fits", jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "y" * 7000})
    failed = wait_for_status(batch, too_long["jobId"])
    assert failed["status"] == "FAILED"
    assert failed["statusReason"] == StatusReason.OVERRIDES_TOO_LONG
    assert failed["attempts"] == []
    assert wait_for_status(batch, fits["jobId"])["status"] == "SUCCEEDED"


def test_overrides_budget_counts_environment_and_resource_overrides(
    emu: BatchEmulator, resources: tuple[str, str]
) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    job = batch.submit_job(
        jobName="env-heavy",
        jobQueue=queue,
        jobDefinition=jobdef,
        parameters={"payload": "p"},
        containerOverrides={
            "environment": [{"name": "BLOB", "value": "z" * 8200}],
            "resourceRequirements": [{"type": "VCPU", "value": "2"}],
        },
    )
    failed = wait_for_status(batch, job["jobId"])
    assert (failed["status"], failed["statusReason"]) == ("FAILED", StatusReason.OVERRIDES_TOO_LONG)


def test_describe_jobs_over_100_ids_is_rejected(emu: BatchEmulator) -> None:
    batch = emu.client("batch")
    with pytest.raises(ClientError) as exc:
        batch.describe_jobs(jobs=[f"job-{i}" for i in range(101)])
    assert _error(exc) == ("ClientException", "Maximum number of jobs supported is 100", 400)
    # 100 unknown ids are fine: unknown ids are silently left out.
    assert batch.describe_jobs(jobs=[f"job-{i}" for i in range(100)])["jobs"] == []
    assert emu.api_calls["DescribeJobs"] == 2
    assert emu.api_calls.max_describe_ids == 101


def test_describe_jobs_with_no_ids_returns_no_jobs(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    batch.submit_job(jobName="some", jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "p"})
    # moto returns every job here; the emulator returns none (documented choice).
    assert batch.describe_jobs(jobs=[])["jobs"] == []


@pytest.mark.parametrize("name", ["-starts-with-dash", "_underscore", "has space", "dot.name", "x" * 129, "ünïcode"])
def test_invalid_job_names_are_rejected(emu: BatchEmulator, resources: tuple[str, str], name: str) -> None:
    queue, jobdef = resources
    with pytest.raises(ClientError) as exc:
        emu.client("batch").submit_job(jobName=name, jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "p"})
    code, message, status = _error(exc)
    assert (code, status) == ("ClientException", 400)
    assert "Job name" in message


@pytest.mark.parametrize("name", ["a", "9", "Job_name-1", "x" * 128])
def test_valid_job_names_are_accepted(emu: BatchEmulator, resources: tuple[str, str], name: str) -> None:
    queue, jobdef = resources
    out = emu.client("batch").submit_job(
        jobName=name, jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "p"}
    )
    assert out["jobName"] == name


@pytest.mark.parametrize("size", [0, 1, 10_001])
def test_array_size_outside_2_to_10000_is_rejected(emu: BatchEmulator, resources: tuple[str, str], size: int) -> None:
    queue, jobdef = resources
    with pytest.raises(ClientError) as exc:
        emu.client("batch").submit_job(
            jobName="arr", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": size}
        )
    code, message, _ = _error(exc)
    assert code == "ClientException"
    assert "between 2 and 10000" in message


def test_unknown_queue_or_job_definition_is_rejected(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="q", jobQueue="no-such-queue", jobDefinition=jobdef)
    assert _error(exc)[0] == "ClientException"
    assert "not found" in _error(exc)[1]
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="d", jobQueue=queue, jobDefinition="no-such-definition")
    assert _error(exc)[0] == "ClientException"
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="d", jobQueue=queue, jobDefinition="emulator-job:99")
    assert _error(exc)[0] == "ClientException"
    # By name, by name:revision and by ARN all resolve.
    for ident in ("emulator-job", "emulator-job:1", jobdef):
        batch.submit_job(jobName="ok", jobQueue="emulator-queue", jobDefinition=ident, parameters={"payload": "p"})


def test_attempt_duration_under_60_seconds_is_rejected(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="t", jobQueue=queue, jobDefinition=jobdef, timeout={"attemptDurationSeconds": 59})
    assert _error(exc)[0] == "ClientException"
    assert "at least 60" in _error(exc)[1]
    with pytest.raises(ClientError) as exc:
        batch.register_job_definition(
            jobDefinitionName="short",
            type="container",
            containerProperties={"image": "i", "vcpus": 1, "memory": 512, "command": ["true"]},
            timeout={"attemptDurationSeconds": 30},
        )
    assert _error(exc)[0] == "ClientException"


@pytest.mark.parametrize(
    "strategy",
    [
        {"attempts": 11},
        {"attempts": 0},
        {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1", "action": "RETRY"}] * 6},
        {"attempts": 2, "evaluateOnExit": [{"onStatusReason": "Host*EC2", "action": "RETRY"}]},
        {"attempts": 2, "evaluateOnExit": [{"onReason": "bad/char*", "action": "EXIT"}]},
        {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1a", "action": "EXIT"}]},
        {"attempts": 2, "evaluateOnExit": [{"onExitCode": "1", "action": "MAYBE"}]},
    ],
)
def test_invalid_retry_strategies_are_rejected(
    emu: BatchEmulator, resources: tuple[str, str], strategy: dict[str, Any]
) -> None:
    queue, jobdef = resources
    with pytest.raises(ClientError) as exc:
        emu.client("batch").submit_job(
            jobName="r",
            jobQueue=queue,
            jobDefinition=jobdef,
            retryStrategy=strategy,  # type: ignore[arg-type]
        )
    assert _error(exc)[0] == "ClientException"


def test_tps_limit_answers_429_too_many_requests() -> None:
    with BatchEmulator(EmulatorConfig(tps_limits={"DescribeJobs": 2.0})) as emu:
        batch = emu.client("batch", max_attempts=1)
        ok = 0
        codes: list[tuple[str, str, int]] = []
        for _ in range(40):
            try:
                batch.describe_jobs(jobs=["x"])
                ok += 1
            except ClientError as error:
                response: Any = error.response
                codes.append(
                    (
                        response["Error"]["Code"],
                        response["Error"]["Message"],
                        response["ResponseMetadata"]["HTTPStatusCode"],
                    )
                )
        assert ok >= 2  # the bucket starts full
        assert codes, "no request was throttled"
        assert set(codes) == {("TooManyRequestsException", "Too Many Requests", 429)}
        assert emu.api_calls["DescribeJobs"] == 40
        assert emu.api_calls.throttled["DescribeJobs"] == len(codes)


def test_submit_job_default_tps_is_aws_50() -> None:
    with BatchEmulator() as emu:
        assert emu.config.tps_limits == {"SubmitJob": 50.0}
