"""The job image for tests: built from a synthesized cloud assembly by the shipped `container/build_image.py`, as
`make image` and `cdk deploy` build it, then run by the emulator's container execution.

The build script takes a lock shared by every build on the machine (pytest-xdist workers, other test runs, `make
image`): the base image is made once, and its name does not move during a build. Without podman, runc and
debootstrap the image tests skip, and fail on CI (`make image-tools` installs them as root).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from cdk_support import NO_ENV, cdk_json_context, synth_to

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "container" / "build_image.py"
PODMAN = ("podman", "--runtime", "runc")
#: Set (CI does, in .ci/run) to make missing image tools a test failure instead of a skip.
REQUIRE_IMAGE_ENV = "SCALER_BATCH_REQUIRE_IMAGE"


def missing_tools() -> list[str]:
    sbin = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in ("podman", "runc", "debootstrap") if shutil.which(name, path=sbin) is None]


def image_tools_available() -> bool:
    """True when the image can be built here; False where it cannot (a developer machine without podman); a test
    failure where it must (CI)."""
    missing = missing_tools()
    if missing and (os.environ.get(REQUIRE_IMAGE_ENV) or os.environ.get("CI") == "true"):
        pytest.fail(f"the job image cannot be built here (missing {', '.join(missing)}): run make image-tools as root")
    return not missing


def require_image_tools() -> None:
    """Skip the test (fail it on CI) where the image cannot be built."""
    if not image_tools_available():
        pytest.skip(f"the job image cannot be built here (missing {', '.join(missing_tools())}): make image-tools")


#: Where the kernel says whether it runs aarch64 binaries through qemu-user-static (make image-tools enables it).
ARM64_BINFMT = pathlib.Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def require_arm64_emulation() -> None:
    """Skip the test (fail it on CI) where this machine cannot run arm64 binaries."""
    enabled = ARM64_BINFMT.is_file() and ARM64_BINFMT.read_text().startswith("enabled")
    if enabled or platform.machine() == "aarch64":
        return
    message = "arm64 binaries cannot run here: run make image-tools as root (qemu-user-static, binfmt_misc)"
    if os.environ.get(REQUIRE_IMAGE_ENV) or os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def build_from_assembly(assembly: pathlib.Path, tag: str) -> dict[str, Any]:
    """Build the assembly's image asset with the shipped build script; returns what it recorded (tag, size, ...)."""
    record = assembly / "built-image.json"
    # The script itself takes the machine's build lock: builds of several xdist workers (or test runs) queue there.
    completed = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--assembly", str(assembly), "--tag", tag, "--json", str(record)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    built: list[dict[str, Any]] = json.loads(record.read_text())
    assert len(built) == 1, built
    return built[0]


def synth_and_build(outdir: pathlib.Path, tag: str, **context: Any) -> dict[str, Any]:
    """Synthesize the app with `context` over cdk.json's, build its image asset; returns the build record."""
    synth_to(outdir, cdk_json_context(nag=False, **context), env=NO_ENV)
    return build_from_assembly(outdir, tag)


def tag_as(local: str, remote: str) -> None:
    """Give the image the name the job definition uses (what `cdk deploy`'s push to ECR amounts to here)."""
    subprocess.run([*PODMAN, "tag", local, remote], check=True, capture_output=True)


def run_in_image(tag: str, *argv: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in the image as its job would (read-only root, /tmp scratch, the image's user)."""
    env_args = [item for key, value in (env or {}).items() for item in ("--env", f"{key}={value}")]
    return subprocess.run(
        [
            *PODMAN, "run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--network", "host",
            "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:8192", *env_args, tag, *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def open_to_the_job(path: pathlib.Path, stop: pathlib.Path) -> None:
    """Let the image's unprivileged user use a test's directory bind-mounted into its container: `path` becomes
    world-writable and every directory from it up to (not including) `stop` world-searchable."""
    path.chmod(0o777)
    for parent in path.parents:
        if parent == stop or parent == parent.parent:
            break
        parent.chmod(parent.stat().st_mode | 0o111)
