"""Container execution: each attempt runs in the job definition's image with podman, as ECS would start it on Batch.

What ECS applies from the job definition, the emulator applies too: the command, the environment and the secrets
(resolved from Secrets Manager or Parameter Store), the user, the read-only root filesystem, the scratch volumes,
the vCPU and memory as cgroup limits (a task that exceeds its memory is killed by the kernel, exit code 137), and
host networking so the job reaches the emulator's endpoint. The container is removed when it exits. Timeouts and
terminations stop it with `podman kill` (SIGTERM, then SIGKILL after the grace), as the ECS agent does.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from batch_emulator.config import EmulatorConfig
from batch_emulator.model import Attempt, Job

#: Batch's container reason for a job the kernel killed at its memory limit.
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
#: What ECS passes when the job definition sets no ulimits: podman's own defaults (the host's hard limits) are
#: refused inside some sandboxes (`setrlimit RLIMIT_NOFILE: Operation not permitted`).
DEFAULT_ULIMITS = ("nofile=1024:4096", "nproc=4096:8192")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")

SecretResolver = Callable[[str], str]
"""`valueFrom` of a container secret (a Secrets Manager or SSM parameter ARN) -> its value."""


@dataclass(frozen=True)
class ContainerLaunch:
    """How one attempt's container is started: podman's argv, and podman's own environment, which carries the job's
    variables (`--env NAME` reads the value from there, so no secret appears on a command line)."""

    name: str
    argv: list[str]
    env: dict[str, str]


def container_name(job: Job, attempt: Attempt) -> str:
    return _NAME_UNSAFE.sub("-", f"batch-emulator-{job.job_id}-{attempt.number}")


def _resources(job: Job) -> dict[str, str]:
    return {item["type"]: item["value"] for item in job.resource_requirements}


def _volume_options(container_properties: dict[str, object], extra_volumes: Sequence[str]) -> list[str]:
    """Scratch volumes as tmpfs (a host volume with no source path, or Fargate's task storage), host paths as binds."""
    volumes = {str(v.get("name")): v for v in _dicts(container_properties.get("volumes"))}
    options: list[str] = []
    for mount in _dicts(container_properties.get("mountPoints")):
        path = str(mount.get("containerPath", ""))
        volume = volumes.get(str(mount.get("sourceVolume")), {})
        host = volume.get("host")
        source = host.get("sourcePath") if isinstance(host, dict) else None
        mode = "ro" if mount.get("readOnly") else "rw"
        if source:
            options += ["--volume", f"{source}:{path}:{mode}"]
        elif path:
            # Anyone may write (mode 1777): the image's user is not root.
            options += ["--tmpfs", f"{path}:{mode},mode=1777,exec"]
    for volume_spec in extra_volumes:
        options += ["--volume", volume_spec]
    return options


def _dicts(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def container_launch(
    config: EmulatorConfig, job: Job, attempt: Attempt, env: dict[str, str], resolve_secret: SecretResolver
) -> ContainerLaunch:
    """podman's argv and environment for the attempt. Raises `ValueError` naming what cannot be started."""
    properties = job.container_properties
    image = properties.get("image")
    if not isinstance(image, str) or not image:
        raise ValueError("the job definition names no image")
    name = container_name(job, attempt)
    job_env = dict(env)
    for secret in _dicts(properties.get("secrets")):
        job_env[str(secret["name"])] = resolve_secret(str(secret["valueFrom"]))
    argv = [
        *config.container_command,
        "run",
        "--rm",
        "--name",
        name,
        "--pull=never",
        "--network=host",
        "--init=false",
    ]
    if properties.get("readonlyRootFilesystem"):
        argv.append("--read-only")
    user = properties.get("user")
    if isinstance(user, str) and user:
        argv += ["--user", user]
    resources = _resources(job)
    if "VCPU" in resources:
        argv += ["--cpus", resources["VCPU"]]
    if "MEMORY" in resources:
        # A hard limit with no swap, as Batch's memory is: the kernel kills the container beyond it.
        argv += ["--memory", f"{resources['MEMORY']}m", "--memory-swap", f"{resources['MEMORY']}m"]
    ulimits = _dicts(properties.get("ulimits"))
    limits = [f"{u['name']}={u['softLimit']}:{u['hardLimit']}" for u in ulimits] or list(DEFAULT_ULIMITS)
    for limit in limits:
        argv += ["--ulimit", limit]
    argv += _volume_options(properties, config.container_volumes)
    for key in sorted(job_env):
        argv += ["--env", key]
    argv += [image, *job.command]
    podman_env = {"PATH": config.container_path, **job_env}
    return ContainerLaunch(name=name, argv=argv, env=podman_env)


def stop(config: EmulatorConfig, name: str, signal_name: str) -> None:
    """Send the container a signal (`podman kill`); a container already gone is no error."""
    subprocess.run(
        [*config.container_command, "kill", "--signal", signal_name, name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )


def killed_by_memory_limit(returncode: int | None) -> bool:
    """Whether a container the emulator did not signal was killed by the kernel at its memory limit: exit code 137
    (SIGKILL) can have no other cause, since the job's command is PID 1 of its container, which no signal from inside
    can kill, and nothing else here signals it. (podman's own OOMKilled flag needs cgroup events some hosts lack.)"""
    return returncode == 128 + 9


def secret_resolver(secretsmanager: Any, ssm: Any) -> SecretResolver:
    """Resolve `valueFrom` as ECS does: a Secrets Manager ARN, optionally with `:json-key:version-stage:version-id`,
    or a Parameter Store parameter (ARN or name). Raises botocore's errors for what it cannot read."""

    def resolve(value_from: str) -> str:
        if ":secretsmanager:" in value_from:
            parts = value_from.split(":")
            arn = ":".join(parts[:7])
            json_key, stage, version = [*parts[7:], "", "", ""][:3]
            request: dict[str, str] = {"SecretId": arn}
            if stage:
                request["VersionStage"] = stage
            if version:
                request["VersionId"] = version
            text = str(secretsmanager.get_secret_value(**request)["SecretString"])
            return str(json.loads(text)[json_key]) if json_key else text
        name = value_from.split(":parameter", 1)[1] if ":parameter" in value_from else value_from
        return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])

    return resolve
