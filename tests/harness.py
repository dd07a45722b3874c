"""End-to-end harnesses: a real Scaler scheduler, the adapter as a separate process, and a backend.

``LocalHarness`` uses the embedded local backend. ``AwsHarness`` runs the AWS Batch backend against the Batch
emulator over HTTP (moto server underneath), so the same test cases exercise both paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

from scaler import Client

from batch_emulator import BatchEmulator, EmulatorConfig, standalone
from batch_emulator.standalone import STACK_CONTAINER_PROPERTIES
from conftest import AdapterProcess, scaler_with_adapter
from scaler_aws_batch.contracts import (
    JOB_SCRATCH_PATH,
    JOB_SCRATCH_VOLUME,
    SIGNING_SECRET_ENV,
    SPOT_RETRY_EVALUATE_ON_EXIT,
)
from scaler_aws_batch.signing import KEY_FILE_NAME, KeyRing, read_key_file
from slurm_cluster import SlurmCluster

BUCKET = "scaler-e2e-bucket"
PREFIX = "scaler-tasks"
#: The job definition's retry strategy, as the CDK stack declares it.
SPOT_RETRY_STRATEGY = {
    "attempts": 2,
    "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT),
}
#: The emulator shrinks AWS durations (timeouts >= 60 s, the 30 s kill grace) by this factor so tests stay quick.
TIME_SCALE = 0.05
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Harness:
    name: str
    #: A per-task timeout (capability ``timeout``) short enough to fire in a test on this backend.
    short_timeout: int
    client: Client
    adapter: AdapterProcess

    work_dir: pathlib.Path

    @contextlib.contextmanager
    def start(self) -> Iterator[Harness]:
        with self.variant(self.work_dir) as (client, adapter):
            self.client, self.adapter = client, adapter
            yield self

    def variant(
        self,
        work_dir: pathlib.Path,
        extra_args: Sequence[str] = (),
        job_env: dict[str, str] | None = None,
        probe: bool = True,
    ) -> contextlib.AbstractContextManager[tuple[Client, AdapterProcess]]:
        """Another scheduler and adapter on the same backend, with extra adapter flags or job environment."""
        args, env = self.adapter_setup(work_dir, job_env)
        return scaler_with_adapter(work_dir, [*args, *extra_args], env=env, probe=probe)

    def adapter_setup(self, work_dir: pathlib.Path, job_env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
        """The adapter's flags and extra environment for a run in ``work_dir``."""
        raise NotImplementedError

    def job_records(self) -> list[dict[str, Any]]:
        """Every job submitted so far, oldest first: jobName, arraySize, resourceRequirements, payload."""
        raise NotImplementedError

    def job_logs(self) -> list[str]:
        raise NotImplementedError

    def stored_object_exists(self, key: str) -> bool:
        raise NotImplementedError

    def put_stored_object(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` of the adapter's store, as anyone with write access to it could."""
        raise NotImplementedError

    @property
    def signing_keys(self) -> KeyRing:
        """The key ring the adapter and its jobs sign with."""
        raise NotImplementedError

    def job_processes(self) -> contextlib.AbstractContextManager[None]:
        """Within this block every job is a real process (for tests of kills, timeouts, signals, sys.path)."""
        return contextlib.nullcontext()

    def job_stopped(self, pid: int) -> bool:
        """The job whose task reported ``os.getpid()`` as ``pid`` no longer runs."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


class LocalHarness(Harness):
    name = "local"
    short_timeout = 2

    def __init__(self, work_dir: pathlib.Path) -> None:
        self.work_dir = work_dir

    def adapter_setup(self, work_dir: pathlib.Path, job_env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
        env_args = [item for key, value in (job_env or {}).items() for item in ("--job-env", f"{key}={value}")]
        return ["--backend", "local", "--work-dir", str(work_dir), *env_args], {}

    def job_records(self) -> list[dict[str, Any]]:
        records = [json.loads(path.read_text()) for path in (self.work_dir / "jobs").glob("*.json")]
        return sorted(records, key=lambda record: record["createdAt"])

    def job_logs(self) -> list[str]:
        return [path.read_text(errors="replace") for path in (self.work_dir / "logs").glob("*.log")]

    def stored_object_exists(self, key: str) -> bool:
        return (self.work_dir / "store" / key).is_file()

    def put_stored_object(self, key: str, data: bytes) -> None:
        path = self.work_dir / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    @property
    def signing_keys(self) -> KeyRing:
        return read_key_file(self.work_dir / KEY_FILE_NAME)


class AwsHarness(Harness):
    name = "aws-batch"
    short_timeout = 60  # AWS's minimum; the emulator's time scale makes it fire after 3 s

    def __init__(self, work_dir: pathlib.Path) -> None:
        self.work_dir = work_dir
        # Jobs run the runner on a thread unless a test needs a process (see `job_processes`): no Python start-up
        # per job, so the suite measures the adapter rather than process creation.
        self.emulator = BatchEmulator(EmulatorConfig(time_scale=TIME_SCALE, max_running_jobs=8, execution="thread"))

    @contextlib.contextmanager
    def job_processes(self) -> Iterator[None]:
        config = self.emulator.config
        saved, config.execution = config.execution, "process"
        try:
            yield
        finally:
            config.execution = saved

    @contextlib.contextmanager
    def start(self) -> Iterator[AwsHarness]:
        with self.emulator:
            self.signing_secret, self._keys = create_signing_secret(self.emulator)
            self.queue, self.job_definition = self.emulator.create_queue_and_job_definition(
                retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600, **self.job_definition_setup()
            )
            self.emulator.client("s3").create_bucket(Bucket=BUCKET)
            with self.variant(self.work_dir) as (client, adapter):
                self.client, self.adapter = client, adapter
                yield self

    def job_definition_setup(self) -> dict[str, Any]:
        """The job definition's image, environment and container settings."""
        return {"environment": {SIGNING_SECRET_ENV: self.signing_secret}}

    def adapter_args(self) -> list[str]:
        return [
            "--backend", "aws-batch", "--job-queue", self.queue, "--job-definition", self.job_definition,
            "--bucket", BUCKET, "--prefix", PREFIX, "--region", self.emulator.region,
            "--endpoint-url", self.emulator.endpoint_url, "--vanish-after", "5",
            "--signing-secret", self.signing_secret,
        ]  # fmt: skip

    @contextlib.contextmanager
    def variant(
        self,
        work_dir: pathlib.Path,
        extra_args: Sequence[str] = (),
        job_env: dict[str, str] | None = None,
        probe: bool = True,
    ) -> Iterator[tuple[Client, AdapterProcess]]:
        saved = dict(self.emulator.job_env)
        self.emulator.job_env.update(job_env or {})
        try:
            with scaler_with_adapter(work_dir, [*self.adapter_args(), *extra_args], env=AWS_ENV, probe=probe) as pair:
                yield pair
        finally:
            self.emulator.job_env.clear()
            self.emulator.job_env.update(saved)

    def _describe_all(self) -> list[dict[str, Any]]:
        batch = self.emulator.client("batch")
        ids: list[str] = []
        for page in batch.get_paginator("list_jobs").paginate(
            jobQueue=self.queue, filters=[{"name": "JOB_NAME", "values": ["scaler*"]}]
        ):
            ids.extend(summary["jobId"] for summary in page["jobSummaryList"])
        jobs: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            jobs.extend(batch.describe_jobs(jobs=ids[start : start + 100])["jobs"])  # type: ignore[arg-type]
        return jobs

    def job_records(self) -> list[dict[str, Any]]:
        records = [
            {
                "jobId": job["jobId"],
                "jobName": job["jobName"],
                "createdAt": job["createdAt"],
                "status": job["status"],
                "statusReason": job.get("statusReason", ""),
                "arraySize": job.get("arrayProperties", {}).get("size"),
                # AWS reports the job definition's resources merged with the submit-time overrides.
                "resourceRequirements": job.get("container", {}).get("resourceRequirements", []),
                "payload": job.get("parameters", {}).get("payload", ""),
                "tags": job.get("tags", {}),
                "attempts": len(job.get("attempts", [])),
            }
            for job in self._describe_all()
        ]
        return sorted(records, key=lambda record: record["createdAt"])

    def job_logs(self) -> list[str]:
        logs = self.emulator.client("logs")
        texts: list[str] = []
        for stream in logs.describe_log_streams(logGroupName="/aws/batch/job")["logStreams"]:
            events = logs.get_log_events(
                logGroupName="/aws/batch/job", logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
            texts.append("\n".join(event["message"] for event in events))
        return texts

    def stored_object_exists(self, key: str) -> bool:
        listing = self.emulator.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{key}")
        return listing.get("KeyCount", 0) > 0

    def put_stored_object(self, key: str, data: bytes) -> None:
        self.emulator.client("s3").put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)

    @property
    def signing_keys(self) -> KeyRing:
        return self._keys


class ImageHarness(AwsHarness):
    """The AWS Batch backend with every job in the job image built from the CDK asset (the emulator's container
    execution): what AWS would run. `shared_root` is bind-mounted at the same path, for tests whose tasks use files."""

    name = "aws-batch-image"

    def __init__(self, work_dir: pathlib.Path, image: str, shared_root: pathlib.Path, fargate: bool = False) -> None:
        self.work_dir = work_dir
        self.image = image
        self.fargate = fargate
        config = EmulatorConfig(
            time_scale=TIME_SCALE,
            max_running_jobs=4,
            execution="container",
            container_volumes=[f"{shared_root}:{shared_root}"],
        )
        self.emulator = BatchEmulator(config)

    @contextlib.contextmanager
    def job_processes(self) -> Iterator[None]:
        yield  # every job is a container already

    def job_stopped(self, pid: int) -> bool:
        """In its container a task's pid means nothing here: no job of the emulator runs any more."""
        return self.emulator.running_processes() == 0

    def job_definition_setup(self) -> dict[str, Any]:
        setup: dict[str, Any] = {
            "image": self.image,
            "environment": {SIGNING_SECRET_ENV: self.signing_secret, "TMPDIR": JOB_SCRATCH_PATH},
            "container_properties": STACK_CONTAINER_PROPERTIES,
        }
        if self.fargate:
            # Fargate takes no host volumes: the scratch volume is task storage, a volume with only a name.
            scratch = {**STACK_CONTAINER_PROPERTIES, "volumes": [{"name": JOB_SCRATCH_VOLUME}]}
            setup.update(fargate=True, compute_type="FARGATE", container_properties=scratch)
        return setup


def create_signing_secret(emulator: BatchEmulator, name: str = "scaler-batch-signing") -> tuple[str, KeyRing]:
    """The signing secret the CDK stack creates, in the emulator: (its ARN, its key ring)."""
    arn, key = standalone.create_signing_secret(emulator, name)
    return arn, KeyRing.parse(key, source=name)


class SlurmHarness(Harness):
    """The Slurm backend on the session's one-node cluster; the store is a directory, as on a shared filesystem."""

    name = "slurm"
    short_timeout = 60  # Slurm's time limits are whole minutes

    def __init__(self, work_dir: pathlib.Path, cluster: SlurmCluster) -> None:
        self.work_dir = work_dir
        self.cluster = cluster

    def adapter_setup(self, work_dir: pathlib.Path, job_env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
        args = ["--backend", "slurm", "--work-dir", str(work_dir / "slurm"), "--vanish-after", "30"]
        # sbatch passes the worker's environment on to its jobs (--export=ALL, Slurm's default).
        return args, {**self.cluster.env, **(job_env or {})}

    def job_records(self) -> list[dict[str, Any]]:
        """From Slurm itself: one record per job or array job, in submission order."""
        fields = "ArrayJobID:|,ArrayTaskID:|,Name:|,cpus-per-task:|,MinMemory:|"
        listing = self.cluster.run("squeue", "--me", "--noheader", "--array", "--states=all", "-O", fields)
        records: dict[int, dict[str, Any]] = {}
        for line in listing.stdout.splitlines():
            array_id, task, name, cpus, memory = line.split("|")[:5]
            record = records.setdefault(int(array_id), {"jobId": array_id, "jobName": name, "arraySize": None})
            if task != "N/A":
                record["arraySize"] = (record["arraySize"] or 0) + 1
            mebibytes = int(float(memory[:-1]) * 1024 ** "MGT".index(memory[-1])) if memory[-1:] in "MGT" else 0
            record["resourceRequirements"] = [{"type": "VCPU", "value": cpus}] + (
                [{"type": "MEMORY", "value": str(mebibytes)}] if mebibytes else []
            )
        return [records[key] for key in sorted(records)]

    def job_logs(self) -> list[str]:
        return [path.read_text(errors="replace") for path in (self.work_dir / "slurm" / "logs").glob("*.log")]

    def stored_object_exists(self, key: str) -> bool:
        return (self.work_dir / "slurm" / "store" / key).is_file()

    def put_stored_object(self, key: str, data: bytes) -> None:
        path = self.work_dir / "slurm" / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    @property
    def signing_keys(self) -> KeyRing:
        return read_key_file(self.work_dir / "slurm" / KEY_FILE_NAME)
