"""Stock: Scaler 2.9's own AWS Batch backend (``scaler.worker_manager.proxy.aws_batch``), as its manager starts it.

``create_aws_batch_worker`` returns a spawn-context ``WorkerProcess`` whose boto3 session has no endpoint, so it is
pointed at the emulator through ``AWS_ENDPOINT_URL`` and dummy credentials in this process's environment while it
starts (a spawned child copies the parent's environment).

The job definition mirrors the one ``tools/provision_infrastructure.py`` registers: the image's entrypoint is
``python /app/job_runner.py`` (``remote/Dockerfile``), the command is the six ``--flag Ref::name`` pairs and every
parameter defaults to ``none`` / ``0``; the emulator runs the installed ``remote/job_runner.py`` as that script.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import uuid
from collections.abc import Iterator

import scaler.worker_manager.proxy.aws_batch.remote.job_runner as job_runner
from scaler import Client
from scaler.config.types.address import AddressConfig
from scaler.worker_manager.proxy.aws_batch.worker import create_aws_batch_worker

from bench.common import AWS_ENV, BUCKET, PREFIX, READY_TIMEOUT_SECONDS, Cluster, stdout_to
from bench.emulator_process import EmulatorProcess
from scaler_aws_batch.embedded import EmbeddedScheduler

NAME = "stock"
#: Scaler's defaults (scaler.config.section.aws_hpc_worker_manager): 100 concurrent jobs, 60-minute job timeout.
BASE_CONCURRENCY = 100
JOB_TIMEOUT_SECONDS = 60 * 60
JOB_RUNNER = str(pathlib.Path(job_runner.__file__).resolve())
FLAGS = ("task_id", "payload", "compressed", "s3_bucket", "s3_prefix", "s3_key")
DEFAULT_PARAMETERS = {
    "task_id": "none",
    "payload": "none",
    "compressed": "0",
    "s3_bucket": "none",
    "s3_prefix": "none",
    "s3_key": "none",
}


def job_command() -> list[str]:
    """``ENTRYPOINT ["python", "/app/job_runner.py"]`` followed by the provisioner's command."""
    return [sys.executable, JOB_RUNNER, *(item for flag in FLAGS for item in (f"--{flag}", f"Ref::{flag}"))]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def cluster(emulator: EmulatorProcess, work_dir: pathlib.Path) -> Iterator[Cluster]:
    """A fresh scheduler and one Scaler AWS Batch worker process; yields once a first task has round-tripped."""
    work_dir.mkdir(parents=True, exist_ok=True)
    queue, job_definition = emulator.control.create_queue_and_job_definition(
        job_definition_name="scaler-job",
        command=job_command(),
        parameters=DEFAULT_PARAMETERS,
        timeout_seconds=JOB_TIMEOUT_SECONDS,
    )
    emulator.control.create_bucket(BUCKET)
    scheduler_log = work_dir / "scheduler.log"
    with EmbeddedScheduler(log_path=str(scheduler_log)) as scheduler:
        worker = create_aws_batch_worker(
            address=AddressConfig.from_string(scheduler.addresses.scheduler),
            object_storage_address=AddressConfig.from_string(scheduler.addresses.object_storage),
            job_queue=queue,
            job_definition=job_definition,
            aws_region=emulator.region,
            s3_bucket=BUCKET,
            worker_manager_id=f"bench-{uuid.uuid4().hex[:8]}".encode(),
            s3_prefix=PREFIX,
            base_concurrency=BASE_CONCURRENCY,
            job_timeout_seconds=JOB_TIMEOUT_SECONDS,
        )
        worker_log = work_dir / "worker.log"
        with _environment({**AWS_ENV, "AWS_ENDPOINT_URL": emulator.endpoint_url}), stdout_to(worker_log):
            worker.start()
        try:
            with Client(address=scheduler.addresses.scheduler) as client:
                if client.submit(abs, -1).result(timeout=READY_TIMEOUT_SECONDS) != 1:
                    raise RuntimeError(f"{NAME}: the adapter answered the probe task wrongly")
                yield Cluster(NAME, client, emulator, worker.pid, [worker_log, scheduler_log])
        finally:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=15)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
