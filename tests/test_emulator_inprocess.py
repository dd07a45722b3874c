"""The emulator's in-process mode: runner jobs run on threads with their own environment and the same S3 calls;
other commands, and every job while the mode is "process", still run as processes."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from scaler.client.serializer.default import DefaultSerializer

from batch_emulator import BatchEmulator, EmulatorConfig
from batch_emulator.testing import log_messages, wait_for_status, wait_until
from harness import create_signing_secret
from scaler_aws_batch import job_parameter, wire
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV
from scaler_aws_batch.signing import KeyRing

BUCKET = "inprocess-bucket"
STORE = f"s3://{BUCKET}/tasks"
SERIALIZER = cloudpickle.dumps(DefaultSerializer())
NONCE = "inprocess-nonce"
#: The emulator's signing key ring, set by the ``resources`` fixture (the jobs read it from the secret it creates).
KEYS: list[KeyRing] = []


@pytest.fixture(scope="module")
def emu() -> Iterator[BatchEmulator]:
    with BatchEmulator(EmulatorConfig(execution="thread", time_scale=0.02, kill_grace_seconds=0.5)) as emulator:
        emulator.client("s3").create_bucket(Bucket=BUCKET)
        yield emulator


@pytest.fixture(scope="module")
def resources(emu: BatchEmulator) -> tuple[str, str]:
    secret, keys = create_signing_secret(emu)
    KEYS[:] = [keys]
    return emu.create_queue_and_job_definition(environment={"FROM_JOB_DEFINITION": "yes", SIGNING_SECRET_ENV: secret})


def _payload(*tasks: tuple[str, Any, tuple[Any, ...]]) -> str:
    builder = wire.PayloadBuilder(
        python=wire.python_version_tag(),
        cloudpickle_version=cloudpickle.__version__,
        result_store=STORE,
        store_threshold=1 << 40,
        nonce=NONCE,
        keys=KEYS[0],
    )
    for task_id, function, arguments in tasks:
        builder.add_task(
            wire.TaskBlobs(
                task_id=task_id,
                serializer=SERIALIZER,
                function=DefaultSerializer.serialize(function),
                arguments=tuple(DefaultSerializer.serialize(argument) for argument in arguments),
            )
        )
    return job_parameter.inline_parameter(builder.encode())


def _result(emu: BatchEmulator, task_id: str) -> wire.TaskResultEnvelope:
    body = emu.client("s3").get_object(Bucket=BUCKET, Key=f"tasks/{wire.result_key(task_id)}")["Body"].read()
    return wire.decode_result(body, KEYS[0], expected_task_id=task_id, expected_nonce=NONCE)


def _job_view_function() -> Any:
    """A task reporting where it runs (nested, so cloudpickle ships it by value to a job process too)."""

    def job_view() -> dict[str, str | None]:
        import os as job_os
        import threading as job_threading

        return {
            "job_id": job_os.environ.get("AWS_BATCH_JOB_ID"),
            "thread": job_threading.current_thread().name,
            "pid": str(job_os.getpid()),
        }

    return job_view


def test_runner_job_runs_on_a_thread_with_its_own_environment(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    job_id = batch.submit_job(
        jobName="threaded",
        jobQueue=queue,
        jobDefinition=jobdef,
        parameters={"payload": _payload(("t-one", _job_view_function(), ()))},
    )["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    result = _result(emu, "t-one")
    assert result.status == "success" and result.job_id == job_id and result.attempt == 1
    view = DefaultSerializer.deserialize(result.body)
    assert view["pid"] == str(os.getpid()) and view["thread"].startswith("batch-job-")
    # The job's variables were passed to the runner, not written into this process's environment.
    assert view["job_id"] is None and "AWS_BATCH_JOB_ID" not in os.environ
    # The runner's own log lines reach the job's log stream, as its stderr would.
    stream = job["container"]["logStreamName"]
    messages = log_messages(emu.client("logs"), "/aws/batch/job", stream)
    assert any("t-one" in message and "success" in message for message in messages)
    assert emu.running_processes() == 0


def test_array_children_each_run_their_own_task(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    tasks = tuple((f"t-array-{index}", pow, (index, 2)) for index in range(5))
    job_id = batch.submit_job(
        jobName="threaded-array", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 5},
        parameters={"payload": _payload(*tasks)},
    )["jobId"]  # fmt: skip
    assert wait_for_status(batch, job_id)["status"] == "SUCCEEDED"
    for index in range(5):
        result = _result(emu, f"t-array-{index}")
        assert DefaultSerializer.deserialize(result.body) == index * index
        assert result.job_id == f"{job_id}:{index}"


def test_a_runner_that_fails_fails_its_job(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    job_id = batch.submit_job(
        jobName="threaded-bad", jobQueue=queue, jobDefinition=jobdef, parameters={"payload": "inline:!!!corrupt"}
    )["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "FAILED"
    assert job["attempts"][-1]["container"]["exitCode"] == 65  # the runner's EX_DATAERR, as from a process


def test_terminating_a_threaded_job_reports_the_signal(
    emu: BatchEmulator, resources: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    queue, jobdef = resources
    batch = emu.client("batch")
    release = tmp_path / "release"

    def wait_for_file(path: str) -> None:
        import os.path as job_path
        import time as job_time

        deadline = job_time.monotonic() + 120
        while not job_path.exists(path) and job_time.monotonic() < deadline:
            job_time.sleep(0.05)

    job_id = batch.submit_job(
        jobName="threaded-long", jobQueue=queue, jobDefinition=jobdef,
        parameters={"payload": _payload(("t-long", wait_for_file, (str(release),)))},
    )["jobId"]  # fmt: skip
    try:
        wait_for_status(batch, job_id, statuses={"RUNNING"})
        batch.terminate_job(jobId=job_id, reason="stop it")
        job = wait_for_status(batch, job_id)
    finally:
        release.touch()  # lets the thread, which a kill cannot stop, return
    assert job["status"] == "FAILED" and job["statusReason"] == "stop it"
    assert job["attempts"][-1]["container"]["exitCode"] == 143


def test_other_commands_and_process_mode_still_start_processes(emu: BatchEmulator, resources: tuple[str, str]) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="pid-printer", command=["python3", "-c", "import os; print('pid', os.getpid())"]
    )
    batch = emu.client("batch")
    job = wait_for_status(batch, batch.submit_job(jobName="proc", jobQueue=queue, jobDefinition=jobdef)["jobId"])
    messages = log_messages(emu.client("logs"), "/aws/batch/job", job["container"]["logStreamName"])
    assert job["status"] == "SUCCEEDED" and messages and messages[0] != f"pid {os.getpid()}"

    queue, jobdef = resources  # the runner's command, naming the signing secret
    emu.config.execution = "process"
    try:
        job_id = batch.submit_job(
            jobName="as-process", jobQueue=queue, jobDefinition=jobdef,
            parameters={"payload": _payload(("t-process", _job_view_function(), ()))},
        )["jobId"]  # fmt: skip
        assert wait_for_status(batch, job_id)["status"] == "SUCCEEDED"
    finally:
        emu.config.execution = "thread"
    view = DefaultSerializer.deserialize(_result(emu, "t-process").body)
    assert view["pid"] != str(os.getpid()) and view["job_id"] == job_id
    wait_until(lambda: emu.running_processes() == 0, "the job process to be reaped")
