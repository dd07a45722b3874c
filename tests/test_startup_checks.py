"""Misconfiguration stops ``scaler-batch worker`` before it takes a task: a real worker process, a real Scaler
scheduler, and the Batch emulator (moto server over HTTP) for the AWS cases. Each case exits non-zero with a
message that says what to fix."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from batch_emulator import BatchEmulator, EmulatorConfig
from conftest import WAIT_SECONDS, wait_for
from harness import AWS_ENV, BUCKET, PREFIX, SPOT_RETRY_STRATEGY, create_signing_secret
from scaler_aws_batch.backends.aws_batch.readiness import check_regions
from scaler_aws_batch.cli import EXIT_BAD_SETTINGS, EXIT_INTERRUPTED, EXIT_STARTUP_CHECK
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV
from scaler_aws_batch.embedded import EmbeddedScheduler
from scaler_aws_batch.errors import BackendError

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Exit:
    code: int
    stderr: str


def _worker(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scaler_aws_batch", "worker", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env if env is not None else {})},
    )


def _run_worker(args: Sequence[str], env: dict[str, str] | None = None) -> Exit:
    process = _worker(args, env)
    _, stderr = process.communicate(timeout=WAIT_SECONDS)  # a hang guard, not a timing assertion
    return Exit(process.returncode, stderr)


def _wait_for_line(process: subprocess.Popen[str], text: str) -> None:
    """Read the worker's stderr until a line holds ``text`` (its log goes there)."""
    assert process.stderr is not None
    stream = process.stderr

    def seen() -> bool:
        line = stream.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"the worker exited {process.returncode} before logging {text!r}")
        return text in line

    wait_for(seen, f"the worker to log {text!r}", interval=0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("scheduler") / "scheduler.log"
    with EmbeddedScheduler(log_path=str(log)) as cluster:
        yield cluster.addresses.scheduler


# --- every backend -------------------------------------------------------------------------------------------------


def test_unreachable_scheduler_exits_naming_the_address(tmp_path: pathlib.Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = _run_worker(["--scheduler", address, "--backend", "local", "--work-dir", str(tmp_path)])
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert f"cannot reach the scheduler at {address}" in result.stderr and "--scheduler" in result.stderr


def test_sigterm_while_waiting_for_the_scheduler_stops_the_worker(tmp_path: pathlib.Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    process = _worker(["--scheduler", address, "--backend", "local", "--work-dir", str(tmp_path)])
    _wait_for_line(process, "checking that the scheduler")
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == EXIT_INTERRUPTED, rest
    assert "stopped by SIGTERM during the start-up checks" in rest


def test_unusable_local_store_exits_before_taking_a_task(scheduler: str, tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    store = (blocker / "store").as_uri()
    result = _run_worker(["--scheduler", scheduler, "--backend", "local", "--work-dir", str(tmp_path / "w"),
                          "--store", store])  # fmt: skip
    assert result.code == EXIT_BAD_SETTINGS, result.stderr
    assert f"cannot use the object store {store} (Not a directory): fix --store" in result.stderr


# --- AWS Batch -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aws:
    emulator: BatchEmulator
    queue: str
    job_definition: str
    secret: str

    def args(self, scheduler: str, **overrides: str) -> list[str]:
        values = {
            "--job-queue": self.queue, "--job-definition": self.job_definition, "--bucket": BUCKET,
            "--prefix": PREFIX, "--region": self.emulator.region, "--endpoint-url": self.emulator.endpoint_url,
            "--signing-secret": self.secret, **overrides,
        }  # fmt: skip
        return ["--scheduler", scheduler, "--backend", "aws-batch", *(item for pair in values.items() for item in pair)]


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    with BatchEmulator(EmulatorConfig(time_scale=0.05, max_running_jobs=2)) as emulator:
        secret, _ = create_signing_secret(emulator)
        queue, job_definition = emulator.create_queue_and_job_definition(
            retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600, environment={SIGNING_SECRET_ENV: secret}
        )
        emulator.client("s3").create_bucket(Bucket=BUCKET)
        yield Aws(emulator, queue, job_definition, secret)


def test_a_correct_configuration_passes_the_checks_and_serves(aws: Aws, scheduler: str) -> None:
    process = _worker(aws.args(scheduler), AWS_ENV)
    try:
        _wait_for_line(process, "start-up checks passed")
    finally:
        process.kill()  # its shutdown is not under test here (and holds no job)
        process.communicate(timeout=WAIT_SECONDS)
    probes = aws.emulator.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/probe/")
    assert probes.get("KeyCount", 0) == 0, "the probe object is deleted"


def test_missing_queue_exits_naming_it(aws: Aws, scheduler: str) -> None:
    result = _run_worker(aws.args(scheduler, **{"--job-queue": "no-such-queue"}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert "job queue no-such-queue does not exist" in result.stderr and "--job-queue" in result.stderr


def test_disabled_queue_exits_saying_to_enable_it(aws: Aws, scheduler: str) -> None:
    batch = aws.emulator.client("batch")
    queue, _ = aws.emulator.create_queue_and_job_definition(
        queue_name="disabled-queue", job_definition_name="unused", environment={SIGNING_SECRET_ENV: aws.secret}
    )
    batch.update_job_queue(jobQueue=queue, state="DISABLED")
    result = _run_worker(aws.args(scheduler, **{"--job-queue": queue}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert "is DISABLED" in result.stderr and "ENABLED and VALID" in result.stderr


def test_missing_job_definition_exits_naming_it(aws: Aws, scheduler: str) -> None:
    result = _run_worker(aws.args(scheduler, **{"--job-definition": "no-such-definition"}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert "no-such-definition" in result.stderr and "--job-definition" in result.stderr


def test_inactive_job_definition_exits(aws: Aws, scheduler: str) -> None:
    _, definition = aws.emulator.create_queue_and_job_definition(
        job_definition_name="retired", environment={SIGNING_SECRET_ENV: aws.secret}
    )
    aws.emulator.client("batch").deregister_job_definition(jobDefinition=definition)
    result = _run_worker(aws.args(scheduler, **{"--job-definition": definition}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert "INACTIVE" in result.stderr or "not ACTIVE" in result.stderr


def test_job_definition_without_the_signing_secret_exits(aws: Aws, scheduler: str) -> None:
    _, definition = aws.emulator.create_queue_and_job_definition(job_definition_name="unsigned-jobs")
    result = _run_worker(aws.args(scheduler, **{"--job-definition": definition}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert f"does not set {SIGNING_SECRET_ENV}" in result.stderr


def test_missing_bucket_exits_before_any_task_runs(aws: Aws, scheduler: str) -> None:
    result = _run_worker(aws.args(scheduler, **{"--bucket": "no-such-bucket-4d1c"}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert "cannot write to the object store s3://no-such-bucket-4d1c" in result.stderr


def test_region_mismatch_exits_naming_both_regions(aws: Aws, scheduler: str) -> None:
    result = _run_worker(aws.args(scheduler, **{"--region": "eu-west-3"}), AWS_ENV)
    assert result.code == EXIT_STARTUP_CHECK, result.stderr
    assert f"is in region {aws.emulator.region} but the worker uses region eu-west-3" in result.stderr
    region = aws.emulator.region
    assert f"run the worker in {region} (--region {region} or AWS_REGION={region})" in result.stderr
    assert "or point it at a job queue in eu-west-3" in result.stderr
    assert "or the job of this region" not in result.stderr


def test_region_mismatch_message_names_the_kind_of_resource_to_change() -> None:
    arn = "arn:aws:batch:us-east-1:123456789012:job-definition/scaler:3"
    with pytest.raises(BackendError) as raised:
        check_regions([("job queue", "queue-a"), ("job definition", arn)], "eu-west-3")
    assert str(raised.value) == (
        f"job definition {arn} is in region us-east-1 but the worker uses region eu-west-3: run the worker in "
        "us-east-1 (--region us-east-1 or AWS_REGION=us-east-1), or point it at a job definition in eu-west-3"
    )


def test_missing_credentials_exit_saying_how_to_configure_them(
    aws: Aws, scheduler: str, tmp_path: pathlib.Path
) -> None:
    nowhere = str(tmp_path / "none")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=nowhere, AWS_CONFIG_FILE=nowhere, AWS_EC2_METADATA_DISABLED="true")
    process = subprocess.run(
        [sys.executable, "-m", "scaler_aws_batch", "worker", *aws.args(scheduler)],
        capture_output=True, text=True, env=env, timeout=WAIT_SECONDS, check=False,
    )  # fmt: skip
    assert process.returncode == EXIT_BAD_SETTINGS, process.stderr
    assert "no AWS credentials" in process.stderr and "credential chain" in process.stderr


def test_rejected_credentials_exit_saying_to_refresh_them(aws: Aws, scheduler: str) -> None:
    key = "AKIAREJECTEDSTARTUP1"
    aws.emulator.faults.expire_credentials(key, 3600.0)  # AWS answers ExpiredTokenException for this key
    result = _run_worker(aws.args(scheduler), {**AWS_ENV, "AWS_ACCESS_KEY_ID": key, "AWS_SESSION_TOKEN": ""})
    assert result.code != 0, result.stderr
    assert "AWS rejected the credentials (ExpiredTokenException)" in result.stderr, result.stderr
    assert "Refresh them" in result.stderr
