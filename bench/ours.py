"""This project's adapter: ``python -m scaler_aws_batch worker --backend aws-batch`` as its own process."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator

from scaler import Client

from batch_emulator import BatchEmulator
from bench.common import AWS_ENV, BUCKET, PREFIX, READY_TIMEOUT_SECONDS, Cluster
from scaler_aws_batch.contracts import SPOT_RETRY_EVALUATE_ON_EXIT
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
def cluster(emulator: BatchEmulator, work_dir: pathlib.Path, name: str = NAME) -> Iterator[Cluster]:
    """A fresh scheduler and one adapter process on ``emulator``; yields once a first task has round-tripped."""
    work_dir.mkdir(parents=True, exist_ok=True)
    # The job definition the CDK stack registers: `scaler-batch run-job --payload Ref::payload`.
    queue, job_definition = emulator.create_queue_and_job_definition(
        job_definition_name="ours-job", retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600
    )
    emulator.client("s3").create_bucket(Bucket=BUCKET)
    scheduler_log = work_dir / "scheduler.log"
    adapter_log = work_dir / "adapter.log"
    with EmbeddedScheduler(log_path=str(scheduler_log)) as scheduler, adapter_log.open("wb") as log:
        command = [
            sys.executable, "-m", "scaler_aws_batch", "worker", "--scheduler", scheduler.addresses.scheduler,
            "--backend", "aws-batch", "--job-queue", queue, "--job-definition", job_definition,
            "--bucket", BUCKET, "--prefix", PREFIX, "--region", emulator.region,
            "--endpoint-url", emulator.endpoint_url, "--log-level", "WARNING",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **AWS_ENV})
        try:
            with Client(address=scheduler.addresses.scheduler) as client:
                if client.submit(abs, -1).result(timeout=READY_TIMEOUT_SECONDS) != 1:
                    raise RuntimeError(f"{name}: the adapter answered the probe task wrongly")
                yield Cluster(name, client, emulator, process.pid, [adapter_log, scheduler_log])
        finally:
            _stop(process)
