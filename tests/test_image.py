"""The job image as AWS would run it: built from the synthesized CDK asset by the shipped build script, its contents,
the user's requirements (with and without hashes) and system packages used by real tasks, a real out-of-memory kill,
and the build's refusal of an image whose Python is not the stack's.

The common e2e cases also run in the image (tests/test_e2e.py, harness ``aws-batch-image``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from cdk_support import NO_ENV, STACK_NAME, cdk_json_context, synth_to
from conftest import WAIT_SECONDS, wait_for
from harness import ImageHarness
from job_image import (
    BUILD_SCRIPT,
    PODMAN,
    require_arm64_emulation,
    require_image_tools,
    run_in_image,
    synth_and_build,
)
from scaler_aws_batch import submit_command
from scaler_aws_batch.errors import JobOutOfMemoryError
from scaler_aws_batch.job_parameter import IndexedParameter, parse_parameter

#: Image builds (the arm64 one under emulation) take minutes on a loaded machine, and wait for each other's lock.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

#: The package of the hashed requirements file and the one without hashes: small, pure Python, no dependencies, and
#: not in the image already.
HASHED_PACKAGE = "toolz"
PLAIN_PACKAGE = "humanize"
SYSTEM_PACKAGE = "jq"
#: The image's size on the Debian stand-in base (python3, pip, venv: about 200 MB): what the runner adds must stay
#: small. Measured 269 MB; this bound catches a dependency that drags in a toolchain or a framework.
MAX_IMAGE_BYTES = 350 * 1024 * 1024


@pytest.fixture
def image_harness(job_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageHarness]:
    """A harness per test: moto's state is one per process, and other tests here start emulators of their own."""
    harness = ImageHarness(tmp_path_factory.mktemp("image"), job_image, tmp_path_factory.getbasetemp())
    with harness.start():
        yield harness


def test_the_image_holds_what_a_default_scaler_client_sends_and_nothing_conflicts(job_image: str) -> None:
    probe = run_in_image(
        job_image,
        "sh",
        "-c",
        "id -u && python -c 'import scaler.io.utility, cloudpickle, boto3, tblib, scaler_aws_batch.runner' "
        "&& python -m pip check && python -m pip list --format json",
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == "10001", "the job runs as the image's unprivileged user"
    assert "No broken requirements found." in lines
    installed = {item["name"].lower(): item["version"] for item in json.loads(lines[-1])}
    assert installed["opengris-scaler"].startswith("2.9.")
    assert {"scaler-aws-batch", "boto3", "cloudpickle", "tblib"} <= set(installed)
    size = int(subprocess.run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", job_image], capture_output=True,
                              text=True, check=True).stdout)  # fmt: skip
    assert size < MAX_IMAGE_BYTES


def test_a_task_beyond_its_memory_is_killed_by_the_kernel_and_reported_out_of_memory(
    image_harness: ImageHarness,
) -> None:
    def hog() -> int:
        block = bytearray(600 * 1024 * 1024)  # 600 MiB in a job limited to 256 MiB
        return len(block)

    with pytest.raises(JobOutOfMemoryError, match="memory"):
        image_harness.client.submit_verbose(hog, args=(), kwargs={}, capabilities={"memory": 256}).result(
            timeout=WAIT_SECONDS
        )
    # The adapter keeps serving after the kill.
    assert image_harness.client.submit(sum, [1, 2, 3]).result(timeout=WAIT_SECONDS) == 6


def _download_hash(image: str, package: str) -> tuple[str, str]:
    """(file name, sha256) of the package's wheel as the image's own pip downloads it (the build's index)."""
    probe = run_in_image(
        image,
        "sh",
        "-c",
        f"python -m pip download -q --no-deps --only-binary=:all: -d /tmp/d {package} && cd /tmp/d && "
        "for f in *; do echo \"$f $(python -c \"import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb')"
        '.read()).hexdigest())" "$f")"; done',
    )
    assert probe.returncode == 0, probe.stderr
    name, digest = probe.stdout.split()
    return name, digest


def _version_of(wheel: str) -> str:
    match = re.match(r"^[A-Za-z0-9_.]+-(?P<version>[^-]+)-", wheel)
    assert match, wheel
    return match["version"]


@pytest.fixture(scope="module")
def user_image(job_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An image built from the asset of a stack with a hashed requirements file and a system package: (tag, the
    hashed package's version)."""
    wheel, digest = _download_hash(job_image, HASHED_PACKAGE)
    version = _version_of(wheel)
    requirements = tmp_path_factory.mktemp("requirements") / "requirements.txt"
    requirements.write_text(f"{HASHED_PACKAGE}=={version} \\\n    --hash=sha256:{digest}\n")
    built = synth_and_build(
        tmp_path_factory.mktemp("user-assembly"),
        "scaler-batch-runner:user-test",
        requirements_file=str(requirements),
        system_packages=[SYSTEM_PACKAGE],
    )
    return str(built["tag"]), version


def test_a_hashed_requirements_file_and_a_system_package_are_used_by_tasks(
    user_image: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tag, version = user_image
    harness = ImageHarness(tmp_path_factory.mktemp("user-image"), tag, tmp_path_factory.getbasetemp())
    with harness.start() as started:

        def toolz_version() -> Any:
            import toolz  # type: ignore[import-not-found]  # only the user image has it

            return toolz.__version__, toolz.first([7, 8])

        assert started.client.submit(toolz_version).result(timeout=WAIT_SECONDS) == (version, 7)
        command = "echo '{\"a\": 41}' | jq '.a + 1'"
        result = submit_command(started.client, command).result(timeout=WAIT_SECONDS)
        assert result.exit_code == 0 and result.stdout.strip() == "42"


def test_a_requirements_file_without_hashes_builds_and_the_package_loads(
    job_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    requirements = tmp_path_factory.mktemp("plain-requirements") / "requirements.txt"
    requirements.write_text(f"{PLAIN_PACKAGE}\n")
    built = synth_and_build(
        tmp_path_factory.mktemp("plain-assembly"), "scaler-batch-runner:plain-test", requirements_file=str(requirements)
    )
    probe = run_in_image(built["tag"], "python", "-c", f"import {PLAIN_PACKAGE}; print({PLAIN_PACKAGE}.intcomma(1234))")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "1,234"


def test_the_build_refuses_an_image_whose_python_is_not_the_stacks(
    job_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A base image that claims 3.12 but runs this machine's 3.11: what a mislabeled or stale base would give.
    subprocess.run(
        [*PODMAN, "tag", "docker.io/library/python:3.11-slim-bookworm", "docker.io/library/python:3.12-slim-bookworm"],
        check=True,
        capture_output=True,
    )
    outdir = tmp_path_factory.mktemp("py312-assembly")
    synth_to(outdir, cdk_json_context(nag=False, python_version="3.12"), env=NO_ENV)
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--assembly", str(outdir), "--tag", "scaler-batch-runner:py312-test"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 1
    assert "runs Python 3.11" in completed.stderr and "python_version" in completed.stderr


def test_a_stack_with_image_uri_has_nothing_to_build(tmp_path: pathlib.Path) -> None:
    require_image_tools()
    synth_to(tmp_path, cdk_json_context(nag=False, image_uri="public.ecr.aws/example/runner:1"), env=NO_ENV)
    record = tmp_path / "built.json"
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--assembly", str(tmp_path), "--json", str(record)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "nothing to build" in completed.stdout
    assert json.loads(record.read_text()) == []


def test_the_fargate_stacks_image_runs_tasks_on_a_fargate_job_definition(
    job_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    built = synth_and_build(tmp_path_factory.mktemp("fargate-assembly"), "scaler-batch-runner:fargate-test",
                            compute="fargate")  # fmt: skip
    assert built["platform"] == "linux/amd64"
    harness = ImageHarness(tmp_path_factory.mktemp("fargate"), built["tag"], tmp_path_factory.getbasetemp(),
                           fargate=True)  # fmt: skip
    with harness.start() as started:
        assert started.client.map(pow, [2, 3], [10, 2]) == [1024, 9]
        jobs = started.emulator.client("batch").describe_job_definitions(jobDefinitions=[started.job_definition])
        assert jobs["jobDefinitions"][0]["platformCapabilities"] == ["FARGATE"]
        wait_for(lambda: {job["status"] for job in started.job_records()} == {"SUCCEEDED"}, "the jobs to succeed")


def test_the_worker_refuses_clients_whose_python_is_not_the_images(job_image: str, tmp_path: pathlib.Path) -> None:
    """The stack outputs the image's Python as PythonVersion (the build checks the image runs it); a worker whose
    clients use another minor is refused at start, before it takes a task."""
    probe = run_in_image(job_image, "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
    image_python = probe.stdout.strip()
    assert image_python == cdk_json_context()["python_version"]
    other = "3.12" if image_python != "3.12" else "3.13"
    outputs = tmp_path / "cdk-outputs.json"
    outputs.write_text(json.dumps({STACK_NAME: {
        "JobQueueArn": "arn:aws:batch:us-east-1:123456789012:job-queue/q",
        "JobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/jd:1",
        "BucketName": "scaler-batch-bucket", "PayloadPrefix": "scaler-batch/", "Region": "us-east-1",
        "PythonVersion": image_python, "Architecture": "x86_64",
    }}))  # fmt: skip
    refused = subprocess.run(
        [sys.executable, "-m", "scaler_aws_batch", "worker", "--backend", "aws-batch", "--stack-outputs",
         str(outputs), "--client-python", other, "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"the job image runs Python {image_python}" in refused.stderr
    assert f"the clients use Python {other}" in refused.stderr


def test_an_indexed_array_payload_is_read_section_by_section_in_the_image(image_harness: ImageHarness) -> None:
    """Forty tasks with incompressible 1 KiB arguments (each below the size that moves a blob to the store): together
    too large for the job parameters, so the array's payload is stored in the indexed format and each child reads its
    own section with ranged GETs, in the image."""
    blobs = [os.urandom(1024) for _ in range(40)]
    before = len(image_harness.job_records())
    assert image_harness.client.map(len, blobs) == [1024] * 40
    new_jobs = image_harness.job_records()[before:]
    assert any(isinstance(parse_parameter(job["payload"]), IndexedParameter) for job in new_jobs), new_jobs


def test_the_job_definitions_secrets_reach_the_task_as_environment(
    job_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A secret named in the job definition (cdk.json `job_secrets`) is resolved from Secrets Manager when the
    container starts and reaches the task as an environment variable, as ECS does."""

    class SecretHarness(ImageHarness):
        def job_definition_setup(self) -> dict[str, Any]:
            setup = super().job_definition_setup()
            secrets = self.emulator.client("secretsmanager")
            arn = secrets.create_secret(Name="api-token", SecretString="s3cr3t-value")["ARN"]
            setup["container_properties"] = {
                **setup["container_properties"],
                "secrets": [{"name": "API_TOKEN", "valueFrom": arn}],
            }
            return setup

    harness = SecretHarness(tmp_path_factory.mktemp("secret"), job_image, tmp_path_factory.getbasetemp())
    with harness.start() as started:

        def token_digest() -> str:
            import hashlib
            import os

            return hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest()

        digest = started.client.submit(token_digest).result(timeout=WAIT_SECONDS)
        assert digest == hashlib.sha256(b"s3cr3t-value").hexdigest()


def test_the_arm64_image_builds_and_runs_a_task_under_emulation(
    job_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Graviton: the arm64 asset (Fargate, architecture arm64) builds on an arm64 stand-in base and runs a task,
    with qemu-user-static running the arm64 binaries on this amd64 machine."""
    require_arm64_emulation()
    built = synth_and_build(tmp_path_factory.mktemp("arm64-assembly"), "scaler-batch-runner:arm64-test",
                            compute="fargate", architecture="arm64")  # fmt: skip
    assert built["platform"] == "linux/arm64" and built["python"].startswith("3.11.")
    harness = ImageHarness(tmp_path_factory.mktemp("arm64"), built["tag"], tmp_path_factory.getbasetemp(),
                           fargate=True)  # fmt: skip
    with harness.start() as started:
        assert started.client.submit(platform.machine).result(timeout=WAIT_SECONDS) == "aarch64"
