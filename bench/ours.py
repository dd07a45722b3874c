"""This project's adapter: ``python -m scaler_aws_batch worker --backend aws-batch`` as its own process."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

from scaler import Client

from bench.common import AWS_ENV, BUCKET, PREFIX, READY_TIMEOUT_SECONDS, Cluster
from bench.emulator_process import EmulatorProcess
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, SPOT_RETRY_EVALUATE_ON_EXIT
from scaler_aws_batch.embedded import EmbeddedScheduler

NAME = "ours"
#: The job definition's retry strategy, as the CDK stack declares it (stacks/job_definition.py).
SPOT_RETRY_STRATEGY = {
    "attempts": 2,
    "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT),
}


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def cluster(emulator: EmulatorProcess, work_dir: pathlib.Path, name: str = NAME) -> Iterator[Cluster]:
    """A fresh scheduler and one adapter process on ``emulator``; yields once a first task has round-tripped."""
    work_dir.mkdir(parents=True, exist_ok=True)
    # The signing secret and the job definition the CDK stack creates (`scaler-batch run-job --payload Ref::payload`,
    # naming the secret in its environment).
    control = emulator.control
    secret = control.create_signing_secret(f"ours-signing-{uuid.uuid4().hex[:8]}")
    queue, job_definition = control.create_queue_and_job_definition(
        job_definition_name="ours-job", retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600,
        environment={SIGNING_SECRET_ENV: secret},
    )  # fmt: skip
    control.create_bucket(BUCKET)
    scheduler_log = work_dir / "scheduler.log"
    adapter_log = work_dir / "adapter.log"
    with EmbeddedScheduler(log_path=str(scheduler_log)) as scheduler, adapter_log.open("wb") as log:
        command = [
            sys.executable, "-m", "scaler_aws_batch", "worker", "--scheduler", scheduler.addresses.scheduler,
            "--backend", "aws-batch", "--job-queue", queue, "--job-definition", job_definition,
            "--bucket", BUCKET, "--prefix", PREFIX, "--region", emulator.region,
            "--endpoint-url", emulator.endpoint_url, "--log-level", "WARNING", "--signing-secret", secret,
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **AWS_ENV})
        try:
            with Client(address=scheduler.addresses.scheduler) as client:
                if client.submit(abs, -1).result(timeout=READY_TIMEOUT_SECONDS) != 1:
                    raise RuntimeError(f"{name}: the adapter answered the probe task wrongly")
                yield Cluster(name, client, emulator, process.pid, [adapter_log, scheduler_log])
        finally:
            _stop(process)
