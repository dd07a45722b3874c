"""The emulator's stand-alone entry point and the AWS demo that uses it, run as a user runs them."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys

import boto3
import pytest

from conftest import REPO, WAIT_SECONDS
from scaler_aws_batch.contracts import EMULATOR_ENDPOINT_LINE_PREFIX, StackOutput


def test_python_m_batch_emulator_serves_the_stack_it_describes(tmp_path: pathlib.Path) -> None:
    outputs = tmp_path / "cdk-outputs.json"
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "batch_emulator", "--port", "0", "--outputs", str(outputs), "--stack-name", "Emu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(EMULATOR_ENDPOINT_LINE_PREFIX), first
        endpoint = first[len(EMULATOR_ENDPOINT_LINE_PREFIX) :].strip()
        stack = json.loads(outputs.read_text())["Emu"]
        assert {StackOutput.JOB_QUEUE_ARN, StackOutput.JOB_DEFINITION_ARN, StackOutput.BUCKET_NAME} <= set(stack)

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=stack[StackOutput.REGION]
        )
        batch = session.client("batch", endpoint_url=endpoint)
        (queue,) = batch.describe_job_queues(jobQueues=[stack[StackOutput.JOB_QUEUE_ARN]])["jobQueues"]
        assert queue["state"] == "ENABLED"
        (jobdef,) = batch.describe_job_definitions(jobDefinitions=[stack[StackOutput.JOB_DEFINITION_ARN]])[
            "jobDefinitions"
        ]
        assert jobdef["containerProperties"]["command"][:2] == ["scaler-batch", "run-job"]
        session.client("s3", endpoint_url=endpoint).head_bucket(Bucket=stack[StackOutput.BUCKET_NAME])
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 0, stderr


def test_a_taken_port_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "batch_emulator", "--port", str(port), "--outputs", str(tmp_path / "o.json")],
            capture_output=True, text=True, timeout=WAIT_SECONDS,
        )  # fmt: skip
    assert done.returncode == 1 and "in use" in done.stderr and not (tmp_path / "o.json").exists()


@pytest.mark.e2e
def test_demo_runs_on_the_aws_batch_backend_through_the_emulator() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scaler_aws_batch", "demo", "--backend", "aws-batch", "--tasks", "4"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Batch emulator at http://127.0.0.1:" in done.stdout
    assert "as expected" in done.stdout and "successes   5" in done.stdout
