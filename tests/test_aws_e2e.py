"""AWS Batch behaviour end to end: the adapter on the aws-batch backend against the Batch emulator over HTTP, with a
real Scaler scheduler and client. Faults are injected in the emulator; nothing in the project is replaced."""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import WAIT_SECONDS, wait_for
from harness import BUCKET, PREFIX, AwsHarness
from scaler_aws_batch.backends.base import RUNNER_COMMAND
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, JobTag, StatusReason, job_name_prefix
from scaler_aws_batch.errors import (
    CapabilityError,
    JobTimeoutError,
    JobVanishedError,
    ResultMissingError,
    SpotRetriesExhaustedError,
)
from scaler_aws_batch.job_parameter import InlineParameter, inline_parameter, parse_parameter
from scaler_aws_batch.limits import (
    MAX_CONTAINER_OVERRIDES_CHARS,
    OVERRIDES_SAFETY_MARGIN_CHARS,
    container_overrides_length,
    render_command,
)
from scaler_aws_batch.wire import BlobRef, PayloadBuilder, TaskBlobs, decode_payload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsHarness]:
    with AwsHarness(tmp_path_factory.mktemp("aws")).start() as harness:
        yield harness


@pytest.fixture(autouse=True)
def job_execution(request: pytest.FixtureRequest, aws: AwsHarness) -> Iterator[None]:
    """Jobs of tests marked ``job_processes`` are real processes; the others run on the emulator's threads."""
    processes = request.node.get_closest_marker("job_processes") is not None
    with aws.job_processes() if processes else contextlib.nullcontext():
        yield


@pytest.fixture(autouse=True)
def clean_faults(aws: AwsHarness) -> Iterator[None]:
    yield
    faults = aws.emulator.faults
    faults.throttle_rate = 0.0
    faults.server_error_rate = 0.0
    faults.spot_reclaim_attempts.clear()
    faults.spot_reclaim_job_name_glob = None
    faults.spot_reclaim_queue_glob = None
    faults.vanish_job_name_glob = None
    faults.delete_on_success_globs.clear()
    faults.lost_s3_put_globs.clear()


def _new_jobs(aws: AwsHarness, before: int) -> list[dict[str, Any]]:
    return aws.job_records()[before:]


def _ended_new_jobs(aws: AwsHarness, before: int) -> list[dict[str, Any]]:
    """The new jobs once each has ended: a result is read as soon as it is stored, before the container exits."""
    wait_for(
        lambda: all(job["status"] in ("SUCCEEDED", "FAILED") for job in _new_jobs(aws, before)),
        "the new jobs to end",
    )
    return _new_jobs(aws, before)


def test_a_thousand_tasks_go_through_array_jobs(aws: AwsHarness) -> None:
    aws.emulator.reset_api_calls()
    before = len(aws.job_records())
    results = aws.client.map(lambda x: (x, x * 3), range(1000))
    assert list(results) == [(x, x * 3) for x in range(1000)]
    calls = aws.emulator.api_calls
    jobs = _new_jobs(aws, before)
    assert sum(job["arraySize"] or 1 for job in jobs) == 1000
    assert calls["SubmitJob"] == len(jobs) < 100, "1,000 tasks become a handful of array jobs"
    assert 0 < calls.max_describe_ids <= 100
    # Results are read once each and deleted in DeleteObjects batches, never one DeleteObject per result.
    wait_for(lambda: not aws.stored_object_exists("results/"), "every result object to be deleted")
    s3 = aws.emulator.s3_requests.snapshot()
    assert s3["clients"].get("GetObject", 0) == 1000 and s3["jobs"].get("PutObject", 0) >= 1000
    assert s3["clients"].get("DeleteObject", 0) == 0 and s3["clients"].get("DeleteObjects", 0) >= 1
    print(f"\nBatch API calls for 1,000 tasks: {dict(calls)}; max ids per DescribeJobs {calls.max_describe_ids}")
    print(f"S3 requests for 1,000 tasks: {s3}")


def _all_inline_fits(aws: AwsHarness, envelope: bytes) -> bool:
    """Would this job's tasks have fit inline, gzipped or not, had nothing been moved to the store?"""
    payload = decode_payload(envelope, aws.signing_keys)
    s3 = aws.emulator.client("s3")
    builder = PayloadBuilder(
        python=payload.python, cloudpickle_version=payload.cloudpickle, result_store=payload.result_store,
        store_threshold=1 << 62, nonce=payload.nonce, keys=aws.signing_keys,
    )  # fmt: skip

    def blob(ref: BlobRef) -> bytes:
        if ref.key is None:
            return payload.inline_blob(ref)
        return s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{ref.key}")["Body"].read()

    for task in payload.tasks:
        args = tuple(blob(argument) for argument in task.arguments)
        builder.add_task(TaskBlobs(task.task_id, blob(task.serializer), blob(task.function), args))
    inline = builder.encode()
    budget = MAX_CONTAINER_OVERRIDES_CHARS - OVERRIDES_SAFETY_MARGIN_CHARS
    return any(
        container_overrides_length(render_command(RUNNER_COMMAND, {"payload": inline_parameter(candidate)})) <= budget
        for candidate in (inline, gzip.compress(inline))
    )


@pytest.mark.parametrize("size", [0, 1, 5 * 1024, 8 * 1024, 31 * 1024, 10 * 1024 * 1024])
def test_payload_sizes_take_the_right_transport(aws: AwsHarness, size: int) -> None:
    blob = os.urandom(size)  # incompressible: the size decides the transport, not gzip
    before = len(aws.job_records())
    assert aws.client.submit(lambda data: len(data), blob).result(timeout=WAIT_SECONDS) == size
    (job,) = _ended_new_jobs(aws, before)
    assert job["status"] == "SUCCEEDED" and "Overrides" not in job["statusReason"]
    parameter = parse_parameter(job["payload"])
    assert isinstance(parameter, InlineParameter), "the envelope itself always fits once large blobs are stored"
    (task,) = decode_payload(parameter.envelope, aws.signing_keys).tasks
    stored = task.arguments[0].key is not None
    # The right transport: the argument moves to the store exactly when the job would not fit inline otherwise.
    assert stored is not _all_inline_fits(aws, parameter.envelope)
    if size <= 1:
        assert not stored
    if size >= 8 * 1024:
        assert stored


def test_no_job_ever_fails_for_overrides_length(aws: AwsHarness) -> None:
    # Sizes around the inline threshold, where an adapter that guesses the budget would overflow it.
    sizes = list(range(5_200, 6_400, 100))
    futures = [aws.client.submit(lambda data: len(data), os.urandom(size)) for size in sizes]
    assert [future.result(timeout=WAIT_SECONDS) for future in futures] == sizes
    assert not [job for job in aws.job_records() if "Overrides" in job["statusReason"]]


def test_every_task_completes_under_30_percent_throttling(aws: AwsHarness) -> None:
    aws.emulator.reset_api_calls()
    aws.emulator.faults.throttle_rate = 0.3
    aws.emulator.faults.reseed()  # seeded draws: the 4th Batch call from here is throttled, whatever the timing
    for wave in range(4):  # one job per wave at least, each one submitted and described: enough calls to draw
        futures = [aws.client.submit(lambda x: x + 1, value) for value in range(wave * 10, wave * 10 + 10)]
        assert [future.result(timeout=WAIT_SECONDS) for future in futures] == list(range(wave * 10 + 1, wave * 10 + 11))
    assert sum(aws.emulator.api_calls.throttled.values()) > 0, "the emulator really did throttle"


@pytest.mark.job_processes
def test_spot_reclaim_on_attempt_one_gives_exactly_one_result(aws: AwsHarness, tmp_path: pathlib.Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    aws.emulator.faults.spot_reclaim_attempts.add(1)
    aws.emulator.faults.spot_reclaim_after_seconds = 1.5
    before = len(aws.job_records())

    def slow_count(directory: str) -> int:
        import os
        import time
        import uuid

        open(os.path.join(directory, uuid.uuid4().hex), "w").close()
        time.sleep(3.0)  # the first attempt's host is reclaimed while this sleeps
        return len(os.listdir(directory))

    result = aws.client.submit(slow_count, str(runs)).result(timeout=WAIT_SECONDS)
    (job,) = _ended_new_jobs(aws, before)
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2, "Batch retried the reclaimed attempt"
    # One result reached the client: the surviving attempt's, which saw every run so far.
    assert result == len(list(runs.iterdir())) and result in (1, 2)
    # The one result was consumed: nothing is left behind once it was handed over.
    wait_for(lambda: not aws.stored_object_exists("results/"), "the consumed result to be deleted")


@pytest.mark.job_processes
def test_spot_reclaim_on_every_attempt_is_a_clear_error(aws: AwsHarness) -> None:
    aws.emulator.faults.spot_reclaim_attempts.update({1, 2})  # the job definition allows 2 attempts
    aws.emulator.faults.spot_reclaim_after_seconds = 0.2
    future = aws.client.submit(lambda: __import__("time").sleep(30))
    with pytest.raises(SpotRetriesExhaustedError, match="every attempt lost its Spot capacity") as caught:
        future.result(timeout=WAIT_SECONDS)
    assert "2 attempt(s)" in str(caught.value) and "On-Demand" in str(caught.value)


@pytest.mark.job_processes
def test_vanished_job_fails_its_task_within_the_bound(aws: AwsHarness) -> None:
    aws.emulator.faults.vanish_job_name_glob = "scaler-*"
    # The adapter runs with --vanish-after 5: the error arrives instead of a wait that never ends. (A vanished job
    # that writes its result is simply delivered: results are found by listing the store, not by describing.)
    with pytest.raises(JobVanishedError, match=r"answered without it for 5s") as caught:
        aws.client.submit(lambda: time.sleep(600)).result(timeout=WAIT_SECONDS)
    assert "asked to stop" in str(caught.value)
    # The adapter also asked Batch to stop the vanished job (which answers that it does not know it).
    job_id = caught.value.job_id
    wait_for(lambda: f"stop job {job_id} " in aws.adapter.log_text() or f"job {job_id} is unknown before" in
             aws.adapter.log_text(), "the vanished job to be stopped")  # fmt: skip


@pytest.mark.job_processes
def test_timeout_is_not_retried(aws: AwsHarness) -> None:
    before = len(aws.job_records())
    future = aws.client.submit_verbose(lambda: time.sleep(600), args=(), kwargs={}, capabilities={"timeout": 60})
    with pytest.raises(JobTimeoutError):
        future.result(timeout=WAIT_SECONDS)
    (job,) = _new_jobs(aws, before)
    assert job["status"] == "FAILED" and job["attempts"] == 1, "Batch does not retry a timed-out job"
    assert job["statusReason"].startswith(StatusReason.TIMEOUT)


def test_missing_result_object_is_a_clear_error(aws: AwsHarness) -> None:
    # The job's result write is lost: deleting it after the job (delete_on_success_globs) raced the adapter's read.
    aws.emulator.faults.lost_s3_put_globs.append(f"/{BUCKET}/{PREFIX}/results/*")
    with pytest.raises(ResultMissingError, match="SUCCEEDED but its result"):
        aws.client.submit(lambda: "lost").result(timeout=WAIT_SECONDS)


@pytest.mark.job_processes
def test_cancel_in_runnable_and_in_running(aws: AwsHarness, tmp_path: pathlib.Path) -> None:
    def sleeper(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    # Fill every slot the emulator runs at once (8) so the next job has to wait in RUNNABLE.
    running = [aws.client.submit(sleeper, 300 + index) for index in range(8)]
    wait_for(lambda: aws.emulator.running_processes() == 8, "eight jobs RUNNING")
    before = len(aws.job_records())
    queued = aws.client.submit(sleeper, 1)
    wait_for(lambda: len(aws.job_records()) > before, "the ninth job to be submitted")
    assert queued.cancel(timeout=WAIT_SECONDS)
    assert len(_new_jobs(aws, before)) == 1
    wait_for(lambda: aws.job_records()[before]["status"] == "FAILED", "the RUNNABLE job to be cancelled")
    assert aws.job_records()[before]["attempts"] == 0, "a job cancelled in RUNNABLE never ran"

    for future in running:
        assert future.cancel(timeout=WAIT_SECONDS)
    wait_for(lambda: aws.emulator.running_processes() == 0, "the RUNNING jobs to be terminated")
    assert all(future.cancelled() for future in [queued, *running])


def test_tags_carry_the_task_and_adapter_ids(aws: AwsHarness) -> None:
    before = len(aws.job_records())
    assert aws.client.submit(abs, -5).result(timeout=WAIT_SECONDS) == 5
    (job,) = _new_jobs(aws, before)
    assert job["jobName"].startswith(job_name_prefix(job["tags"][JobTag.ADAPTER_ID]))
    assert set(job["tags"]) == {JobTag.ADAPTER_ID, JobTag.TASK_ID, JobTag.TASK_COUNT}
    assert job["tags"][JobTag.TASK_COUNT] == "1"
    assert base64.b16decode(job["tags"][JobTag.TASK_ID].upper())


# --- requests checked, stuck jobs explained --------------------------------------------------------------------------


def test_timeout_under_a_minute_is_refused_before_submitting(aws: AwsHarness) -> None:
    before = len(aws.job_records())
    future = aws.client.submit_verbose(abs, args=(-1,), kwargs={}, capabilities={"timeout": 5})
    with pytest.raises(CapabilityError, match="timeout=5 is below this backend's minimum of 60"):
        future.result(timeout=WAIT_SECONDS)
    assert len(aws.job_records()) == before, "no job was submitted for an impossible request"


def _managed_queue(aws: AwsHarness, name: str, instance_types: list[str]) -> str:
    """A queue on a MANAGED EC2 compute environment limited to ``instance_types`` (maxvCpus 64)."""
    ec2, iam, batch = aws.emulator.client("ec2"), aws.emulator.client("iam"), aws.emulator.client("batch")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    trust = '{"Version": "2012-10-17", "Statement": []}'
    role = iam.create_role(RoleName=f"{name}-service", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName=f"{name}-instance")["InstanceProfile"]["Arn"]
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"{name}-ce", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={
            "type": "EC2", "minvCpus": 0, "maxvCpus": 64, "desiredvCpus": 0, "instanceTypes": instance_types,
            "subnets": [subnet], "securityGroupIds": [group], "instanceRole": profile,
        },
    )["computeEnvironmentArn"]  # fmt: skip
    return batch.create_job_queue(
        jobQueueName=name, state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]  # fmt: skip


def test_request_beyond_every_instance_type_is_refused_naming_the_largest(
    aws: AwsHarness, tmp_path: pathlib.Path
) -> None:
    queue = _managed_queue(aws, "small-instances", ["m5.large", "c5.xlarge"])  # 2 vCPU/8 GiB, 4 vCPU/8 GiB
    with aws.variant(tmp_path / "work", ["--job-queue", queue]) as (client, _):
        for capabilities in ({"vcpus": 8}, {"memory": 16384}, {"vcpus": 4, "memory": 8193}):
            future = client.submit_verbose(abs, args=(-2,), kwargs={}, capabilities=capabilities)
            with pytest.raises(CapabilityError, match=r"largest possible is vcpus=4 \(c5.xlarge\), memory=8192 MiB"):
                future.result(timeout=WAIT_SECONDS)
        fits = client.submit_verbose(abs, args=(-2,), kwargs={}, capabilities={"vcpus": 4, "memory": 8192})
        assert fits.result(timeout=WAIT_SECONDS) == 2


@pytest.mark.job_processes
def test_spot_reclaims_send_the_task_to_the_on_demand_queue(aws: AwsHarness, tmp_path: pathlib.Path) -> None:
    on_demand, _ = aws.emulator.create_queue_and_job_definition(
        queue_name="on-demand-queue", job_definition_name="on-demand-unused",
        environment={SIGNING_SECRET_ENV: aws.signing_secret},
    )  # fmt: skip
    faults = aws.emulator.faults
    faults.spot_reclaim_attempts.update({1, 2})  # every Spot attempt the job definition allows (2)
    faults.spot_reclaim_after_seconds = 0.2
    faults.spot_reclaim_queue_glob = aws.queue.rsplit("/", 1)[-1]  # only the Spot queue loses hosts
    before = len(aws.job_records())
    with aws.variant(tmp_path / "work", ["--on-demand-queue", on_demand]) as (client, adapter):
        assert client.submit(lambda: __import__("time").sleep(2) or "done").result(timeout=WAIT_SECONDS) == "done"
        log = adapter.log_text()
    spot_jobs = [job for job in _new_jobs(aws, before) if job["attempts"] == 2]
    assert spot_jobs and all(job["status"] == "FAILED" for job in spot_jobs), "both Spot attempts were reclaimed"
    assert "2 Spot reclaims" in log and "goes to the On-Demand queue" in log
    listed = aws.emulator.client("batch").list_jobs(jobQueue=on_demand, jobStatus="SUCCEEDED")["jobSummaryList"]
    assert listed, "the next attempt ran on the On-Demand queue"


@pytest.mark.job_processes
def test_job_stuck_in_runnable_is_explained_in_the_log(aws: AwsHarness, tmp_path: pathlib.Path) -> None:
    def sleeper(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    with aws.variant(tmp_path / "work", ["--runnable-warn-after", "1"]) as (client, adapter):
        running = [client.submit(sleeper, 300 + index) for index in range(8)]  # every emulator slot
        wait_for(lambda: aws.emulator.running_processes() == 8, "eight jobs RUNNING")
        waiting = client.submit(sleeper, 1)
        wait_for(lambda: "has been RUNNABLE for" in adapter.log_text(), "the adapter to explain the RUNNABLE job")
        line = next(line for line in adapter.log_text().splitlines() if "has been RUNNABLE for" in line)
        assert re.search(r"queue \S*emulator-queue is ENABLED/VALID", line) and "Diagnosis:" in line
        for future in [waiting, *running]:
            assert future.cancel(timeout=WAIT_SECONDS)
        wait_for(lambda: aws.emulator.running_processes() == 0, "the RUNNING jobs to be terminated")
