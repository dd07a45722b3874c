"""The stack's settings: the ``cdk.json`` context, read once by ``app.py`` and validated here.

Every key is optional; :data:`DEFAULTS` lists the defaults. Values may come from ``cdk.json`` (JSON types) or from
``cdk synth -c key=value`` (always strings), so numbers, booleans and lists are also accepted as strings
(``"true"``, ``"512"``, ``"m6i,c6i"`` or ``'["m6i", "c6i"]'``). A bad value raises :class:`ValueError` naming the key
and what to put there instead. ``docs/deploy.md`` describes every key.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from scaler_aws_batch import fargate
from scaler_aws_batch.contracts import Architecture, JobTag
from scaler_aws_batch.tags import MAX_USER_TAGS, check_user_tags

T = TypeVar("T")

#: Relative ``requirements_file`` paths are read from here (where ``cdk.json`` lives).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The job-level settings AWS enforces (docs/aws-limits.md gives their public sources).
MIN_JOB_TIMEOUT_SECONDS = 60
MIN_RETRY_ATTEMPTS = 2
MAX_RETRY_ATTEMPTS = 10
MIN_RUNNABLE_TIMEOUT_SECONDS = 600
MAX_RUNNABLE_TIMEOUT_SECONDS = 86_400
MIN_JOB_MEMORY_MIB = 128
#: The client's Python must match the image's, because cloudpickle payloads are tied to the interpreter's minor version.
SUPPORTED_PYTHON_MINORS = range(10, 15)
#: CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS_ALLOWED: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
#: The instance-type list value that lets Batch pick from current C, M and R families (x86_64 only).
OPTIMAL = "optimal"
#: Fargate's ephemeral storage setting (GiB): AWS Batch accepts 21 to 200.
MIN_EPHEMERAL_STORAGE_GIB = 21
MAX_EPHEMERAL_STORAGE_GIB = 200

_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_VPC_ID = re.compile(r"^vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
_INSTANCE_TYPE = re.compile(r"^(?P<family>[a-z]+(?P<generation>[0-9]+)(?P<suffix>[a-z-]*))(?:\.[a-z0-9]+)?$")
_PYTHON_VERSION = re.compile(r"^3\.(?P<minor>[0-9]{1,2})$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(?:/[A-Za-z0-9!_.*'()-]+)*/$")
#: A POSIX environment variable name, as ECS accepts it for container secrets.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
#: A Secrets Manager secret's complete ARN (its 6-character suffix included, so the grant names exactly one
#: secret), optionally followed by ECS's ``:json-key:version-stage:version-id`` selector.
_SECRET_ARN = re.compile(
    r"^(?P<arn>arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6})"
    r"(?::[^:]*:[^:]*:[^:]*)?$"
)
_PARAMETER_ARN = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/[A-Za-z0-9_.\-/]{1,2048}$")
#: Environment variables the runner or ECS set themselves: a secret must not shadow them.
RESERVED_ENV_PREFIXES = ("AWS_", "ECS_", "SCALER_BATCH_")
#: What ECS_IMAGE_PULL_BEHAVIOR accepts (the ECS agent's configuration).
IMAGE_PULL_BEHAVIORS = ("default", "always", "once", "prefer-cached")


def secret_resource_arn(reference: str) -> str:
    """The IAM resource to grant for a ``job_secrets`` value: the secret's ARN without an ECS JSON-key selector, or
    the parameter's ARN."""
    match = _SECRET_ARN.match(reference)
    return match["arn"] if match is not None else reference


#: Debian package names (Debian Policy 5.6.1): they travel as one build argument into ``apt-get install``.
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
#: An image reference: ``[registry/]repository[:tag][@sha256:digest]``, lower-case repository path.
_IMAGE_URI = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?$"
)
#: Graviton (arm64) families: a 'g' after the generation (m7g, c6gn, r8gd) or the first one, a1. 'g5' is x86 (GPU).
_GRAVITON = re.compile(r"^(?:a1|[a-z]+[0-9]+[a-z-]*g[a-z-]*)$")


class ComputeChoice(enum.Enum):
    """What runs the jobs."""

    EC2 = "ec2"  # managed EC2 instances (Spot, then On-Demand), scaled from zero
    FARGATE = "fargate"  # Fargate Spot, then Fargate: no instances at all


class ArchitectureChoice(enum.Enum):
    """The job image's CPU architecture; EC2 instance families must match it."""

    X86_64 = Architecture.X86_64
    ARM64 = Architecture.ARM64


class RemovalChoice(enum.Enum):
    """What ``cdk destroy`` does with the bucket and the log group."""

    DESTROY = "destroy"  # delete them, objects included: the stack leaves nothing behind
    RETAIN = "retain"  # keep them (and their data) after the stack is gone


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """Validated stack settings. Build it with :meth:`from_context`; the constructs never read the context."""

    stack_name: str = "ScalerAwsBatch"
    #: ``None``: create a VPC; otherwise an existing VPC id, found with ``Vpc.from_lookup`` (needs account/region).
    vpc_id: str | None = None
    max_azs: int = 2
    nat_gateways: int = 1
    max_vcpus: int = 256
    instance_types: tuple[str, ...] = ("m6i", "c6i", "r6i")
    spot: bool = True
    on_demand_fallback: bool = True
    gpu_queue: bool = False
    gpu_instance_types: tuple[str, ...] = ("g4dn", "g5")
    gpu_max_vcpus: int = 64
    job_vcpus: float = 1
    job_memory_mib: int = 2048
    job_timeout_seconds: int = 3600
    retry_attempts: int = 3
    runnable_timeout_seconds: int = 1800
    payload_prefix: str = "scaler-batch/"
    payload_retention_days: int = 7
    log_retention_days: int = 30
    removal_policy: RemovalChoice = RemovalChoice.DESTROY
    python_version: str = "3.11"
    #: Environment variable name -> Secrets Manager secret ARN or SSM parameter ARN, injected into every job.
    job_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: vCPUs the first compute environment of the default queue keeps running while idle (warm starts).
    min_vcpus: int = 0
    #: ECS_IMAGE_PULL_BEHAVIOR for the container instances: ``prefer-cached`` reuses an image already on the host.
    image_pull_behavior: str = "default"
    #: User tags every job carries (the worker reads them from the stack's outputs) next to the adapter's own.
    job_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Tag keys (IAM patterns, ``*`` allowed) the worker may add with ``--tag``, besides the ``job_tags`` keys.
    worker_tag_keys: tuple[str, ...] = ()
    compute: ComputeChoice = ComputeChoice.EC2
    architecture: ArchitectureChoice = ArchitectureChoice.X86_64
    #: A pip requirements file installed into the built image (relative to the repository root, or absolute).
    requirements_file: str | None = None
    #: Debian packages installed into the built image with apt-get (e.g. libgomp1 for LightGBM).
    system_packages: tuple[str, ...] = ()
    #: A prebuilt image to run instead of building ``container/Dockerfile``: synth and deploy need no Docker.
    image_uri: str | None = None
    #: Fargate only: the task's ephemeral storage in GiB, where ``/tmp`` (payloads, results, scratch) lives.
    ephemeral_storage_gib: int = MIN_EPHEMERAL_STORAGE_GIB

    def __post_init__(self) -> None:
        _check(
            bool(_STACK_NAME.match(self.stack_name)),
            "stack_name",
            self.stack_name,
            "a CloudFormation stack name: a letter, then up to 127 letters, digits or '-'",
        )
        if self.vpc_id is not None:
            _check(
                bool(_VPC_ID.match(self.vpc_id)),
                "vpc_id",
                self.vpc_id,
                "an existing VPC id such as 'vpc-0123456789abcdef0', or leave it unset for a new VPC",
            )
        _check(1 <= self.max_azs <= 6, "max_azs", self.max_azs, "1 to 6 availability zones")
        _check(
            0 <= self.nat_gateways <= self.max_azs,
            "nat_gateways",
            self.nat_gateways,
            f"0 to max_azs ({self.max_azs}) NAT gateways; 0 runs jobs in isolated subnets with VPC endpoints",
        )
        _check(self.max_vcpus >= 1, "max_vcpus", self.max_vcpus, "a positive number of vCPUs")
        _check(
            0 <= self.min_vcpus <= self.max_vcpus,
            "min_vcpus",
            self.min_vcpus,
            f"0 (scale to zero when idle) up to max_vcpus ({self.max_vcpus}) vCPUs kept running",
        )
        _check(
            self.image_pull_behavior in IMAGE_PULL_BEHAVIORS,
            "image_pull_behavior",
            self.image_pull_behavior,
            f"one of the ECS agent's ECS_IMAGE_PULL_BEHAVIOR values: {', '.join(IMAGE_PULL_BEHAVIORS)}",
        )
        if self.compute is ComputeChoice.FARGATE:  # settings of EC2 container instances; Fargate has none
            _check(
                self.min_vcpus == 0, "min_vcpus", self.min_vcpus, "0 with compute=fargate (Fargate has no warm pool)"
            )
            _check(
                self.image_pull_behavior == "default",
                "image_pull_behavior",
                self.image_pull_behavior,
                "'default' with compute=fargate (an ECS agent setting of EC2 instances)",
            )
        _check_job_secrets(self.job_secrets)
        try:
            check_user_tags(self.job_tags, source="cdk.json context 'job_tags'")
        except ValueError as exc:
            raise ValueError(f"{exc}; set job_tags to at most {MAX_USER_TAGS} tags AWS accepts") from exc
        for pattern in self.worker_tag_keys:
            _check(
                1 <= len(pattern) <= 128 and not pattern.startswith(("aws:", JobTag.PREFIX)),
                "worker_tag_keys",
                pattern,
                f"tag keys or patterns such as 'team' or 'cost-center*', not starting with 'aws:' or {JobTag.PREFIX!r}",
            )
        if self.compute is ComputeChoice.EC2:
            _check_instance_types("instance_types", self.instance_types, self.architecture)
        _check(
            self.spot or self.on_demand_fallback,
            "on_demand_fallback",
            self.on_demand_fallback,
            "true when spot is false: the default queue needs at least one compute environment",
        )
        _check(
            not (self.gpu_queue and self.compute is ComputeChoice.FARGATE),
            "gpu_queue",
            self.gpu_queue,
            "false with compute=fargate: Fargate has no GPUs (use compute=ec2 for a GPU queue)",
        )
        if self.gpu_queue:
            _check_instance_types("gpu_instance_types", self.gpu_instance_types, self.architecture)
        _check(self.gpu_max_vcpus >= 1, "gpu_max_vcpus", self.gpu_max_vcpus, "a positive number of vCPUs")
        if self.compute is ComputeChoice.EC2:
            _check(
                float(self.job_vcpus).is_integer() and 1 <= self.job_vcpus <= self.max_vcpus,
                "job_vcpus",
                self.job_vcpus,
                f"a whole number of vCPUs from 1 to max_vcpus ({self.max_vcpus}); EC2 jobs take whole vCPUs",
            )
        else:
            problem = fargate.check(self.job_vcpus, self.job_memory_mib)
            _check(
                problem is None, "job_vcpus", self.job_vcpus, f"a size Fargate accepts with job_memory_mib: {problem}"
            )
            _check(
                self.job_vcpus <= self.max_vcpus,
                "max_vcpus",
                self.max_vcpus,
                f"at least job_vcpus ({self.job_vcpus:g})",
            )
        _check(
            MIN_EPHEMERAL_STORAGE_GIB <= self.ephemeral_storage_gib <= MAX_EPHEMERAL_STORAGE_GIB,
            "ephemeral_storage_gib",
            self.ephemeral_storage_gib,
            f"{MIN_EPHEMERAL_STORAGE_GIB} to {MAX_EPHEMERAL_STORAGE_GIB} GiB (AWS Batch's Fargate range)",
        )
        self._check_image()
        _check(
            self.job_memory_mib >= MIN_JOB_MEMORY_MIB,
            "job_memory_mib",
            self.job_memory_mib,
            f"at least {MIN_JOB_MEMORY_MIB} MiB",
        )
        _check(
            self.job_timeout_seconds >= MIN_JOB_TIMEOUT_SECONDS,
            "job_timeout_seconds",
            self.job_timeout_seconds,
            f"at least {MIN_JOB_TIMEOUT_SECONDS} seconds (AWS Batch's minimum attemptDurationSeconds)",
        )
        _check(
            MIN_RETRY_ATTEMPTS <= self.retry_attempts <= MAX_RETRY_ATTEMPTS,
            "retry_attempts",
            self.retry_attempts,
            f"{MIN_RETRY_ATTEMPTS} to {MAX_RETRY_ATTEMPTS} attempts (one retry at least, for Spot reclaims)",
        )
        _check(
            MIN_RUNNABLE_TIMEOUT_SECONDS <= self.runnable_timeout_seconds <= MAX_RUNNABLE_TIMEOUT_SECONDS,
            "runnable_timeout_seconds",
            self.runnable_timeout_seconds,
            f"{MIN_RUNNABLE_TIMEOUT_SECONDS} to {MAX_RUNNABLE_TIMEOUT_SECONDS} seconds (the queue's RUNNABLE limit)",
        )
        _check(
            bool(_PREFIX.match(self.payload_prefix)),
            "payload_prefix",
            self.payload_prefix,
            "an S3 key prefix ending in '/', without a leading '/', e.g. 'scaler-batch/'",
        )
        _check(
            self.payload_retention_days >= 1, "payload_retention_days", self.payload_retention_days, "at least 1 day"
        )
        _check(
            self.log_retention_days in LOG_RETENTION_DAYS_ALLOWED,
            "log_retention_days",
            self.log_retention_days,
            f"one of CloudWatch's retention periods: {', '.join(map(str, LOG_RETENTION_DAYS_ALLOWED))}",
        )
        version = _PYTHON_VERSION.match(self.python_version)
        _check(
            version is not None and int(version["minor"]) in SUPPORTED_PYTHON_MINORS,
            "python_version",
            self.python_version,
            "the client's Python major.minor, 3.10 to 3.14, e.g. '3.11'",
        )

    def _check_image(self) -> None:
        if self.image_uri is not None:
            _check(
                bool(_IMAGE_URI.match(self.image_uri)),
                "image_uri",
                self.image_uri,
                "an image reference such as '123456789012.dkr.ecr.us-east-1.amazonaws.com/my-runner:1.0' or"
                " 'ghcr.io/org/runner@sha256:<digest>'",
            )
            for key in ("requirements_file", "system_packages"):
                _check(
                    not getattr(self, key),
                    key,
                    getattr(self, key),
                    "nothing when image_uri is set: they only change the image this stack builds; install them in"
                    " your image instead (docs/deploy.md, 'Bring your own image')",
                )
        if self.requirements_file is not None:
            path = self.requirements_path
            _check(
                path is not None and path.is_file(),
                "requirements_file",
                self.requirements_file,
                f"an existing pip requirements file (relative paths start at {REPO_ROOT})",
            )
        for package in self.system_packages:
            _check(
                bool(_DEBIAN_PACKAGE.match(package)),
                "system_packages",
                package,
                "Debian package names such as 'libgomp1' (lower-case letters, digits, '+', '-', '.')",
            )

    @property
    def requirements_path(self) -> Path | None:
        """The requirements file as an absolute path (``None`` when unset)."""
        if self.requirements_file is None:
            return None
        path = Path(self.requirements_file).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    @property
    def destroy_on_delete(self) -> bool:
        return self.removal_policy is RemovalChoice.DESTROY

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> StackConfig:
        """Build from a context getter such as ``app.node.try_get_context``; a missing key (``None``) keeps its
        default. Raises :class:`ValueError` that names the key and the expected value."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = get(field.name)
            if raw is None:
                continue
            values[field.name] = _PARSERS[field.name](field.name, raw)
        return cls(**values)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every context key this config reads."""
        return tuple(field.name for field in dataclasses.fields(cls))


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"cdk.json context '{key}' is {value!r}: set it to {expected}")


def _check_job_secrets(secrets: Mapping[str, str]) -> None:
    for name, reference in secrets.items():
        _check(
            bool(_ENV_NAME.match(name)) and not name.startswith(RESERVED_ENV_PREFIXES),
            "job_secrets",
            name,
            f"environment variable names (letters, digits, '_'; not starting with {', '.join(RESERVED_ENV_PREFIXES)})",
        )
        _check(
            isinstance(reference, str) and bool(_SECRET_ARN.match(reference) or _PARAMETER_ARN.match(reference)),
            "job_secrets",
            f"{name}=<not shown>",  # a value pasted here by mistake must not reach a terminal or CI log
            "a Secrets Manager secret's complete ARN (with its 6-character suffix, optionally ':json-key::') or an SSM"
            " parameter ARN ('arn:aws:ssm:REGION:ACCOUNT:parameter/NAME'); never the secret's value",
        )


def _check_instance_types(key: str, types: Sequence[str], architecture: ArchitectureChoice) -> None:
    arm = architecture is ArchitectureChoice.ARM64
    _check(
        len(types) > 0,
        key,
        list(types),
        f"a non-empty list of {architecture.value} instance types or families" + ("" if arm else f", or ['{OPTIMAL}']"),
    )
    if OPTIMAL in types:
        _check(len(types) == 1, key, list(types), f"either ['{OPTIMAL}'] alone or a list of instance types")
        _check(
            not arm,
            key,
            list(types),
            "Graviton families such as ['m7g', 'c7g', 'r7g']: 'optimal' picks x86_64 families only",
        )
        return
    for name in types:
        match = _INSTANCE_TYPE.match(name)
        _check(match is not None, key, name, "an instance type such as 'm6i.xlarge' or a family such as 'm6i'")
        assert match is not None  # for mypy: _check raised otherwise
        graviton = bool(_GRAVITON.match(match["family"]))
        if arm:
            _check(
                graviton,
                key,
                name,
                "a Graviton (arm64) type such as 'm7g', 'c7g' or 'g5g': architecture is arm64, so the job image is"
                " built for linux/arm64 and x86_64 instances cannot run it (or set architecture=x86_64)",
            )
        else:
            _check(
                not graviton,
                key,
                name,
                "an x86_64 type: the job image is built for linux/amd64, Graviton (arm64) types cannot run it"
                " (or set architecture=arm64 and list Graviton types only)",
            )


def _parse_str(key: str, raw: object) -> str:
    _check(isinstance(raw, str) and raw != "", key, raw, "a non-empty string")
    return str(raw)


def _parse_int(key: str, raw: object) -> int:
    if isinstance(raw, bool):  # bool is an int subclass: reject true/false where a number is wanted
        _check(False, key, raw, "a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw.strip()):
        return int(raw.strip())
    _check(False, key, raw, "a whole number")
    raise AssertionError("unreachable")


def _parse_bool(key: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    _check(False, key, raw, "true or false")
    raise AssertionError("unreachable")


def _parse_str_list(key: str, raw: object) -> tuple[str, ...]:
    items: object = raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"cdk.json context '{key}' is {raw!r}: set it to a JSON list of strings") from exc
        else:
            items = [part.strip() for part in text.split(",") if part.strip()]
    _check(
        isinstance(items, list) and all(isinstance(item, str) for item in items),
        key,
        raw,
        'a list of strings, e.g. ["m6i", "c6i"] or "m6i,c6i"',
    )
    assert isinstance(items, list)
    return tuple(str(item) for item in items)


def _parse_number(key: str, raw: object) -> float:
    if isinstance(raw, bool):
        _check(False, key, raw, "a number")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            pass
    _check(False, key, raw, "a number")
    raise AssertionError("unreachable")


E = TypeVar("E", bound=enum.Enum)


def _enum_parser(kind: type[E]) -> Callable[[str, object], E]:
    def parse(key: str, raw: object) -> E:
        choices = [choice.value for choice in kind]
        _check(isinstance(raw, str) and raw.strip().lower() in choices, key, raw, f"one of {choices}")
        assert isinstance(raw, str)
        return kind(raw.strip().lower())

    return parse


_parse_removal = _enum_parser(RemovalChoice)


def _parse_str_map(key: str, raw: object) -> dict[str, str]:
    items: object = raw
    if isinstance(raw, str):
        try:
            items = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"cdk.json context '{key}' is not JSON: set it to a JSON object of strings") from exc
    _check(
        isinstance(items, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()),
        key,
        "<not shown>" if key == "job_secrets" else raw,
        'a JSON object of strings, e.g. {"NAME": "value"}',
    )
    assert isinstance(items, dict)
    return {str(k): str(v) for k, v in items.items()}


def _parse_optional_str(key: str, raw: object) -> str | None:
    if raw == "":
        return None
    return _parse_str(key, raw)


_PARSERS: Mapping[str, Callable[[str, object], Any]] = {
    "stack_name": _parse_str,
    "vpc_id": _parse_optional_str,
    "max_azs": _parse_int,
    "nat_gateways": _parse_int,
    "max_vcpus": _parse_int,
    "instance_types": _parse_str_list,
    "spot": _parse_bool,
    "on_demand_fallback": _parse_bool,
    "gpu_queue": _parse_bool,
    "gpu_instance_types": _parse_str_list,
    "gpu_max_vcpus": _parse_int,
    "job_vcpus": _parse_number,
    "job_memory_mib": _parse_int,
    "job_timeout_seconds": _parse_int,
    "retry_attempts": _parse_int,
    "runnable_timeout_seconds": _parse_int,
    "payload_prefix": _parse_str,
    "payload_retention_days": _parse_int,
    "log_retention_days": _parse_int,
    "removal_policy": _parse_removal,
    "python_version": _parse_str,
    "job_secrets": _parse_str_map,
    "min_vcpus": _parse_int,
    "image_pull_behavior": _parse_str,
    "job_tags": _parse_str_map,
    "worker_tag_keys": _parse_str_list,
    "compute": _enum_parser(ComputeChoice),
    "architecture": _enum_parser(ArchitectureChoice),
    "requirements_file": _parse_optional_str,
    "system_packages": _parse_str_list,
    "image_uri": _parse_optional_str,
    "ephemeral_storage_gib": _parse_int,
}
