"""Configuration of ``scaler-batch worker --backend aws-batch``.

Each setting is looked up, first found wins, in:

1. command-line flags (``--job-queue``),
2. environment variables (``SCALER_BATCH_JOB_QUEUE``),
3. a JSON config file (``--config FILE.json``; keys are the :class:`AwsBatchSettings` field names),
4. the CDK stack's outputs: the file ``cdk deploy --outputs-file`` writes (``--stack-outputs``), or CloudFormation
   DescribeStacks for ``--stack NAME`` when no outputs file is given.

The region falls back to ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.config
import botocore.exceptions

from scaler_aws_batch.aws_calls import AwsCalls, error_code
from scaler_aws_batch.backends.aws_batch.backend import (
    DEFAULT_DESCRIBE_TPS,
    DEFAULT_LOG_GROUP,
    DEFAULT_SUBMIT_TPS,
    AwsBatchBackend,
)
from scaler_aws_batch.backends.base import BackendError
from scaler_aws_batch.backends.kind import BackendKind, BackendSetup
from scaler_aws_batch.contracts import StackOutput
from scaler_aws_batch.limits import MIN_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_cloudformation.client import CloudFormationClient
    from mypy_boto3_s3 import S3Client

#: AWS's account-wide SubmitJob limit per region.
MAX_SUBMIT_TPS: Final = 50.0
DEFAULT_PREFIX: Final = "scaler-tasks"
DEFAULT_MAX_CONCURRENT_JOBS: Final = 1000
DEFAULT_JOB_TIMEOUT_SECONDS: Final = 3600
ENV_PREFIX: Final = "SCALER_BATCH_"
#: Environment variables that name the config file, the stack outputs file and the stack (for containers).
ENV_CONFIG: Final = "SCALER_BATCH_CONFIG"
ENV_STACK_OUTPUTS: Final = "SCALER_BATCH_STACK_OUTPUTS"
ENV_STACK: Final = "SCALER_BATCH_STACK"

#: CDK stack output key -> settings field. ``AdapterPolicyArn`` is informational and not read.
STACK_OUTPUT_FIELDS: Final[Mapping[str, str]] = {
    StackOutput.JOB_QUEUE_ARN: "job_queue",
    StackOutput.ON_DEMAND_JOB_QUEUE_ARN: "on_demand_queue",
    StackOutput.GPU_JOB_QUEUE_ARN: "gpu_queue",
    StackOutput.JOB_DEFINITION_ARN: "job_definition",
    StackOutput.BUCKET_NAME: "bucket",
    StackOutput.PAYLOAD_PREFIX: "prefix",
    StackOutput.REGION: "region",
    StackOutput.LOG_GROUP_NAME: "log_group",
}

_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_ARN_PREFIX: Final = r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:"
_QUEUE_PATTERN: Final = re.compile(rf"^(?:{_NAME_PATTERN}|{_ARN_PREFIX}job-queue/{_NAME_PATTERN})$")
_JOB_DEFINITION_PATTERN: Final = re.compile(
    rf"^(?:{_NAME_PATTERN}(?::\d+)?|{_ARN_PREFIX}job-definition/{_NAME_PATTERN}(?::\d+)?)$"
)
_BUCKET_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION_PATTERN: Final = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
_LOG_GROUP_PATTERN: Final = re.compile(r"^[A-Za-z0-9_./#-]{1,512}$")
_PREFIX_PATTERN: Final = re.compile(r"^[A-Za-z0-9!_.*'()/-]{1,512}$")


def _flag(field_name: str) -> str:
    return _FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


def _env(field_name: str) -> str:
    return _ENV_NAMES.get(field_name, ENV_PREFIX + field_name.upper())


def _where(field_name: str) -> str:
    """How a user sets a field, for error messages."""
    return f"{_flag(field_name)} / {_env(field_name)}"


def _default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""


@dataclasses.dataclass(frozen=True)
class AwsBatchSettings:
    """Everything the AWS Batch worker needs to know, validated on construction."""

    job_queue: str
    job_definition: str
    bucket: str
    region: str = dataclasses.field(default_factory=_default_region)
    on_demand_queue: str | None = None
    gpu_queue: str | None = None
    prefix: str = DEFAULT_PREFIX
    log_group: str = DEFAULT_LOG_GROUP
    endpoint_url: str | None = None
    max_concurrent_jobs: int = DEFAULT_MAX_CONCURRENT_JOBS
    job_timeout_seconds: int = DEFAULT_JOB_TIMEOUT_SECONDS
    submit_tps: float = DEFAULT_SUBMIT_TPS
    describe_tps: float = DEFAULT_DESCRIBE_TPS

    def __post_init__(self) -> None:
        for name in ("job_queue", "on_demand_queue", "gpu_queue"):
            value = getattr(self, name)
            if value is None and name != "job_queue":
                continue
            if not value:
                raise ValueError(f"{name} is required: set {_where(name)} or deploy the stack and pass --stack")
            if not _QUEUE_PATTERN.match(value):
                raise ValueError(f"{name} {value!r} is not a job queue name or ARN ({_where(name)})")
        if not self.job_definition:
            raise ValueError(f"job_definition is required: set {_where('job_definition')}")
        if not _JOB_DEFINITION_PATTERN.match(self.job_definition):
            raise ValueError(
                f"job_definition {self.job_definition!r} must be a name, name:revision or job-definition ARN "
                f"({_where('job_definition')})"
            )
        if not self.bucket:
            raise ValueError(f"bucket is required: set {_where('bucket')}")
        if not _BUCKET_PATTERN.match(self.bucket) or ".." in self.bucket:
            raise ValueError(f"bucket {self.bucket!r} is not a valid S3 bucket name ({_where('bucket')})")
        if not self.region:
            raise ValueError(f"region is not set: pass {_where('region')} or set AWS_REGION")
        if not _REGION_PATTERN.match(self.region):
            raise ValueError(f"region {self.region!r} is not an AWS region like 'us-east-1' ({_where('region')})")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"prefix {self.prefix!r} must not start or end with '/' ({_where('prefix')})")
        if not _PREFIX_PATTERN.match(self.prefix) or "//" in self.prefix:
            raise ValueError(
                f"prefix {self.prefix!r} must be a non-empty S3 key prefix of safe characters ({_where('prefix')})"
            )
        if not _LOG_GROUP_PATTERN.match(self.log_group):
            raise ValueError(f"log_group {self.log_group!r} is not a CloudWatch log group name ({_where('log_group')})")
        if self.endpoint_url is not None and not re.match(r"^https?://[^\s/]+", self.endpoint_url):
            raise ValueError(
                f"endpoint_url {self.endpoint_url!r} must start with http:// or https:// ({_where('endpoint_url')})"
            )
        _check_int(self, "max_concurrent_jobs", minimum=1)
        _check_int(self, "job_timeout_seconds", minimum=MIN_TIMEOUT_SECONDS)
        _check_number(self, "submit_tps", maximum=MAX_SUBMIT_TPS)
        _check_number(self, "describe_tps", maximum=None)


def _check_int(settings: AwsBatchSettings, name: str, *, minimum: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number ({_where(name)}), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} ({_where(name)}), got {value}")


def _check_number(settings: AwsBatchSettings, name: str, *, maximum: float | None) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number ({_where(name)}), got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be greater than 0 ({_where(name)}), got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, AWS's account limit ({_where(name)}), got {value}")


#: Flags whose names differ from ``--field-name``.
_FLAGS: Final[Mapping[str, str]] = {"job_timeout_seconds": "--job-timeout"}
#: Environment variables whose names differ from ``SCALER_BATCH_FIELD_NAME``.
_ENV_NAMES: Final[Mapping[str, str]] = {"job_timeout_seconds": "SCALER_BATCH_JOB_TIMEOUT"}
_FIELDS: Final = {field.name: field for field in dataclasses.fields(AwsBatchSettings)}
_INT_FIELDS: Final = frozenset({"max_concurrent_jobs", "job_timeout_seconds"})
_FLOAT_FIELDS: Final = frozenset({"submit_tps", "describe_tps"})


def add_aws_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--backend aws-batch`` flags. Every flag defaults to None so the loader can apply precedence."""
    group = parser.add_argument_group("AWS Batch backend")
    group.add_argument("--job-queue", dest="job_queue", default=None, help="job queue name or ARN (Spot first)")
    group.add_argument("--on-demand-queue", dest="on_demand_queue", default=None, help="On-Demand job queue")
    group.add_argument("--gpu-queue", dest="gpu_queue", default=None, help="job queue for GPU tasks")
    group.add_argument("--job-definition", dest="job_definition", default=None, help="name, name:revision or ARN")
    group.add_argument("--bucket", dest="bucket", default=None, help="S3 bucket for payloads and results")
    group.add_argument("--prefix", dest="prefix", default=None, help=f"S3 key prefix (default {DEFAULT_PREFIX})")
    group.add_argument("--region", dest="region", default=None, help="AWS region (default: AWS_REGION)")
    group.add_argument("--log-group", dest="log_group", default=None, help=f"default {DEFAULT_LOG_GROUP}")
    group.add_argument("--endpoint-url", dest="endpoint_url", default=None, help="AWS endpoint (emulator, VPC)")
    group.add_argument(
        "--max-concurrent-jobs", dest="max_concurrent_jobs", default=None, help="jobs in flight at once (1000)"
    )
    group.add_argument(
        "--job-timeout", dest="job_timeout_seconds", default=None, help="seconds per job attempt (3600, >= 60)"
    )
    group.add_argument("--submit-tps", dest="submit_tps", default=None, help="SubmitJob calls per second (40)")
    group.add_argument("--describe-tps", dest="describe_tps", default=None, help="DescribeJobs calls per second")
    group.add_argument("--config", dest="config", default=None, metavar="FILE.json", help="JSON settings file")
    group.add_argument(
        "--stack-outputs", dest="stack_outputs", default=None, metavar="FILE.json", help="cdk deploy --outputs-file"
    )
    group.add_argument("--stack", dest="stack", default=None, metavar="NAME", help="CDK/CloudFormation stack name")


CloudFormationClientFactory = Callable[[str | None, str | None], "CloudFormationClient"]


def _default_cloudformation_client(region: str | None, endpoint_url: str | None) -> CloudFormationClient:
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 5})
    return boto3.Session(region_name=region).client(
        "cloudformation", region_name=region, endpoint_url=endpoint_url, config=config
    )


def load_aws_batch_settings(
    args: argparse.Namespace,
    env: Mapping[str, str],
    *,
    cloudformation_client_factory: CloudFormationClientFactory | None = None,
) -> AwsBatchSettings:
    """Build settings from flags > environment > JSON config file > stack outputs (see the module docstring).

    ``cloudformation_client_factory(region, endpoint_url)`` makes the client for DescribeStacks (tests inject one).
    """
    flag_values = {name: value for name in _FIELDS if (value := getattr(args, name, None)) is not None}
    env_values = {name: value for name in _FIELDS if (value := env.get(_env(name), "")) != ""}

    config_path = getattr(args, "config", None) or env.get(ENV_CONFIG) or None
    file_values = _read_config_file(config_path) if config_path else {}

    def lookup(name: str) -> Any:
        for layer in (flag_values, env_values, file_values):
            if name in layer:
                return layer[name]
        return None

    outputs_path = getattr(args, "stack_outputs", None) or env.get(ENV_STACK_OUTPUTS) or None
    stack = getattr(args, "stack", None) or env.get(ENV_STACK) or None
    stack_values: dict[str, Any] = {}
    if outputs_path:
        stack_values = _stack_values(_read_outputs_file(outputs_path, stack))
    elif stack:
        region = lookup("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        factory = cloudformation_client_factory or _default_cloudformation_client
        stack_values = _stack_values(_describe_stack_outputs(factory(region, lookup("endpoint_url")), stack))

    values: dict[str, Any] = {}
    for name in _FIELDS:
        for layer in (flag_values, env_values, file_values, stack_values):
            if name in layer:
                values[name] = _convert(name, layer[name])
                break
    if "region" not in values:
        fallback_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if fallback_region:
            values["region"] = fallback_region
        else:
            values["region"] = ""  # let validation explain what to set, independent of os.environ
    missing = [name for name in ("job_queue", "job_definition", "bucket") if not values.get(name)]
    if missing:
        raise ValueError(
            "missing AWS Batch settings: "
            + ", ".join(f"{name} ({_where(name)})" for name in missing)
            + "; or point at the deployed stack with --stack-outputs cdk-outputs.json or --stack NAME"
        )
    return AwsBatchSettings(**values)


def build_aws_batch_backend(settings: AwsBatchSettings, *, session: boto3.Session | None = None) -> AwsBatchBackend:
    """The backend for ``settings``, with clients from ``session`` (or the default credential chain)."""
    return AwsBatchBackend(
        job_queue=settings.job_queue,
        job_definition=settings.job_definition,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        session=session,
        log_group=settings.log_group,
        submit_tps=settings.submit_tps,
        describe_tps=settings.describe_tps,
    )


# ---------------------------------------------------------------------------------------------------- helpers


def _convert(name: str, value: Any) -> Any:
    """Turn a flag, environment or file value into the field's type; errors name the flag and the env var."""
    if name in _INT_FIELDS:
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a whole number ({_where(name)}), got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{name} must be a whole number ({_where(name)}), got {value!r}")
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number ({_where(name)}), got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{name} must be a number ({_where(name)}), got {value!r}")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string ({_where(name)}), got {value!r}")
    return value.strip()


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{what} {path!r} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path!r} is not valid JSON: {exc}") from exc


def _read_config_file(path: str) -> dict[str, Any]:
    data = _read_json(path, "config file (--config)")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a JSON object of settings")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"config file {path!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(_FIELDS))}"
        )
    return {key: value for key, value in data.items() if value is not None}


def _read_outputs_file(path: str, stack: str | None) -> dict[str, Any]:
    data = _read_json(path, "stack outputs file (--stack-outputs)")
    if not isinstance(data, dict) or not all(isinstance(value, dict) for value in data.values()):
        raise ValueError(f"stack outputs file {path!r} must look like {{'StackName': {{'JobQueueArn': ...}}}}")
    if stack is not None:
        if stack not in data:
            raise ValueError(
                f"stack {stack!r} (--stack) is not in {path!r}; stacks there: {', '.join(sorted(data)) or 'none'}"
            )
        return dict(data[stack])
    if len(data) != 1:
        raise ValueError(
            f"stack outputs file {path!r} holds {len(data)} stacks ({', '.join(sorted(data))}); "
            "pick one with --stack NAME"
        )
    return dict(next(iter(data.values())))


def _describe_stack_outputs(client: CloudFormationClient, stack: str) -> dict[str, Any]:
    try:
        response = AwsCalls().call("DescribeStacks", lambda: client.describe_stacks(StackName=stack))
    except BackendError as exc:  # throttled or 5xx after backoff, credentials, access denied: the layer says which
        raise ValueError(f"cannot read the outputs of stack {stack!r}: {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        raise ValueError(
            f"cannot read the outputs of stack {stack!r} ({error_code(exc)}): check --stack, --region and the "
            "credentials"
        ) from exc
    stacks = response.get("Stacks", [])
    if not stacks:
        raise ValueError(f"stack {stack!r} (--stack) was not found")
    return {
        output["OutputKey"]: output.get("OutputValue", "")
        for output in stacks[0].get("Outputs", [])
        if "OutputKey" in output
    }


def _stack_values(outputs: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field_name in STACK_OUTPUT_FIELDS.items():
        value = outputs.get(key)
        if value is None or value == "":
            continue
        if field_name == "prefix" and isinstance(value, str):
            value = value.strip("/")
        values[field_name] = value
    return values


def build_aws_batch(args: argparse.Namespace, env: Mapping[str, str]) -> BackendSetup:
    """The worker's AWS Batch backend and S3 store from flags, environment, config file and stack outputs."""
    from scaler_aws_batch.adapter.task_manager import QueueRouting
    from scaler_aws_batch.stores.s3 import S3Store, s3_client_config

    aws = load_aws_batch_settings(args, env)
    # No fixed session: the backend and the store build theirs from the default credential chain, and build
    # them again when AWS refuses the credentials (see aws_calls).
    backend = build_aws_batch_backend(aws)
    region, endpoint_url = aws.region, aws.endpoint_url

    def s3_client() -> S3Client:  # a new session reads the credential chain again (see aws_calls)
        return boto3.Session(region_name=region).client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=s3_client_config()
        )

    store = S3Store(aws.bucket, aws.prefix, client_factory=s3_client)
    routing = QueueRouting(on_demand=aws.on_demand_queue, gpu=aws.gpu_queue)
    return BackendSetup(
        backend, store, aws.max_concurrent_jobs, aws.job_timeout_seconds, routing, 0.5, 5.0, 0.5, aws.job_queue
    )


KIND = BackendKind(name="aws-batch", add_arguments=add_aws_batch_arguments, build=build_aws_batch)
