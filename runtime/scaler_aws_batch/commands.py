"""Command tasks: run a shell command as a Scaler task, with no scheduler change.

``submit_command(client, "bash train.sh")`` submits the module-level function :func:`run_command` with a
:class:`ShellCommand` argument. It is an ordinary Scaler task, so it also runs on plain Scaler workers; on this
project's runner the result is a :class:`CommandResult`, and a non-zero exit raises
:class:`~scaler_aws_batch.errors.CommandFailedError` carrying the exit code and the tail of stderr.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scaler_aws_batch.errors import CommandFailedError

if TYPE_CHECKING:
    from scaler import Client
    from scaler.client.future import ScalerFuture

#: How much of stderr a failure message carries.
STDERR_TAIL_CHARS = 4_000


@dataclasses.dataclass(frozen=True)
class ShellCommand:
    command: str
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    shell: str = "/bin/sh"

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("a command task needs a non-empty command")


@dataclasses.dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration_seconds: float


def run_command(spec: ShellCommand) -> CommandResult:
    """Run ``spec`` through its shell; return its output, or raise :class:`CommandFailedError` on a non-zero exit."""
    import os

    environment = dict(os.environ)
    if spec.env:
        environment.update(spec.env)
    started = time.monotonic()
    # The child stays in the runner's process group, so a timeout's SIGTERM to the group stops it too.
    completed = subprocess.run(
        [spec.shell, "-c", spec.command],
        cwd=spec.cwd,
        env=environment,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if completed.returncode != 0:
        raise CommandFailedError(spec.command, completed.returncode, completed.stderr[-STDERR_TAIL_CHARS:])
    return CommandResult(
        command=spec.command,
        exit_code=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr,
        duration_seconds=time.monotonic() - started,
    )


def submit_command(
    client: Client,
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    capabilities: dict[str, int] | None = None,
) -> ScalerFuture:
    """Submit ``command`` as a task. ``future.result()`` is a :class:`CommandResult`.

    ``capabilities`` routes and sizes the job like any task: ``{"vcpus": 2, "memory": 4096, "gpu": 1}``.
    """
    kwargs: dict[str, Any] = {}
    return client.submit_verbose(
        run_command, args=(ShellCommand(command=command, env=env, cwd=cwd),), kwargs=kwargs, capabilities=capabilities
    )
