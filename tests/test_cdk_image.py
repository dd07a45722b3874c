"""The job image's contract, checked without a Docker engine: Dockerfile shape, checkov, and a runner that imports
only what the image installs (no Scaler, no pyzmq)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cdk_support import REPO, checkov_failures
from stacks.config import StackConfig

pytestmark = pytest.mark.cdk

DOCKERFILE = REPO / "container" / "Dockerfile"
#: checkov Dockerfile findings accepted, with the reason.
CHECKOV_SKIPS = {
    "CKV_DOCKER_2": "A Batch job container runs to completion; Batch ignores Docker HEALTHCHECK and ends the job on"
    " its timeout instead.",
}


def test_dockerfile_pins_python_to_the_build_arg_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert f"ARG PYTHON_VERSION={StackConfig().python_version}" in text
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, flags=re.MULTILINE)
    # Every image is the client's Python, but the empty stage a named build context replaces (the requirements).
    assert ("scratch", "requirements") in froms
    images = [image for image, _ in froms if image != "scratch"]
    assert images and all(image.startswith("python:${PYTHON_VERSION}-slim") for image in images)
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0")), users
    assert re.search(r"^ENTRYPOINT \[\]$", text, flags=re.MULTILINE)
    # The package with its declared dependencies (Scaler: the clients' default serializer is one of its classes), and
    # a build-time check that a task's imports load and nothing conflicts.
    assert "python -m pip install /wheels/*.whl" in text and "--no-deps /wheels" not in text
    assert re.search(r'python -c "import scaler, cloudpickle, boto3, tblib, scaler_aws_batch.runner"', text)
    assert "python -m pip check" in text


def test_root_dockerignore_allows_only_what_the_image_needs() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert "!container/Dockerfile" in lines and "!runtime/" in lines and "!pyproject.toml" in lines


def test_checkov_dockerfile_is_clean_with_justified_skips() -> None:
    failed, _ = checkov_failures(DOCKERFILE, "dockerfile", CHECKOV_SKIPS)
    assert failed == [], failed


def test_runner_command_imports_neither_scaler_nor_zmq() -> None:
    # The runner module itself needs neither (a custom image's other entry points stay light); the image still has
    # Scaler, for the clients' serializer.
    code = (
        "import sys\n"
        "for name in ('scaler', 'zmq'):\n"
        "    sys.modules[name] = None  # any import of them now raises ImportError\n"
        "from scaler_aws_batch.cli import main\n"
        "sys.exit(main(['run-job', '--help']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--payload" in result.stdout
