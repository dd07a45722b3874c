"""Settings of ``scaler-batch worker --backend aws-batch`` (the ``[aws_batch]`` table of the config file).

Each setting is taken from, first found wins: the flag, the environment variable, the config file, then the CDK
stack's outputs (the file ``cdk deploy --outputs-file`` writes, ``--stack-outputs``, or CloudFormation
DescribeStacks for ``--stack NAME`` when no outputs file is given), then its default. The field's ``stack_output``
names the output that fills it. The region falls back to ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.config
import botocore.exceptions

from scaler_aws_batch import config
from scaler_aws_batch.aws_calls import AwsCalls, error_code
from scaler_aws_batch.aws_clients import READ_TIMEOUT_SECONDS, client_config
from scaler_aws_batch.backends.aws_batch.backend import (
    DEFAULT_DESCRIBE_TPS,
    DEFAULT_LOG_GROUP,
    DEFAULT_SUBMIT_TPS,
    AwsBatchBackend,
)
from scaler_aws_batch.backends.kind import BackendKind, BackendSetup
from scaler_aws_batch.config import Settings, check_positive, setting, where
from scaler_aws_batch.contracts import Architecture, StackOutput
from scaler_aws_batch.errors import BackendError
from scaler_aws_batch.limits import MIN_TIMEOUT_SECONDS
from scaler_aws_batch.tags import check_user_tags
from scaler_aws_batch.worker_settings import WorkerSettings

if TYPE_CHECKING:
    from mypy_boto3_cloudformation.client import CloudFormationClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

#: AWS's account-wide SubmitJob limit per region.
MAX_SUBMIT_TPS: Final = 50.0
DEFAULT_PREFIX: Final = "scaler-tasks"
#: The settings a worker cannot run without; the stack outputs provide them all.
REQUIRED: Final = ("job_queue", "job_definition", "bucket")

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
_SECRET_PATTERN: Final = re.compile(
    r"^(?:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$"
)
_PYTHON_PATTERN: Final = re.compile(r"^[0-9]+\.[0-9]+$")
ARCHITECTURES: Final = (Architecture.X86_64, Architecture.ARM64)


@dataclasses.dataclass(frozen=True)
class AwsBatchSettings(Settings):
    """Everything the AWS Batch worker needs to know, validated on construction."""

    section = "aws_batch"

    job_queue: str = setting(
        "", "Job queue name or ARN (Spot first).", stack_output=StackOutput.JOB_QUEUE_ARN, default_text="required"
    )
    on_demand_queue: str | None = setting(
        None,
        "Job queue for tasks with the `on_demand` capability.",
        stack_output=StackOutput.ON_DEMAND_JOB_QUEUE_ARN,
        default_text="none: `on_demand` tasks are refused",
    )
    gpu_queue: str | None = setting(
        None,
        "Job queue for tasks with the `gpu` capability.",
        stack_output=StackOutput.GPU_JOB_QUEUE_ARN,
        default_text="none: `gpu` tasks are refused",
    )
    job_definition: str = setting(
        "",
        "Job definition: name, name:revision or ARN.",
        stack_output=StackOutput.JOB_DEFINITION_ARN,
        default_text="required",
    )
    bucket: str = setting(
        "", "S3 bucket for payloads and results.", stack_output=StackOutput.BUCKET_NAME, default_text="required"
    )
    prefix: str = setting(DEFAULT_PREFIX, "S3 key prefix.", stack_output=StackOutput.PAYLOAD_PREFIX)
    region: str = setting(
        "", "AWS region.", stack_output=StackOutput.REGION, default_text="`AWS_REGION` / `AWS_DEFAULT_REGION`"
    )
    log_group: str = setting(
        DEFAULT_LOG_GROUP, "CloudWatch log group of the jobs.", stack_output=StackOutput.LOG_GROUP_NAME
    )
    endpoint_url: str | None = setting(
        None, "AWS endpoint (an emulator, a VPC endpoint).", default_text="AWS's public endpoints"
    )
    submit_tps: float = setting(
        DEFAULT_SUBMIT_TPS, "SubmitJob calls per second (AWS allows 50 per account and region)."
    )
    describe_tps: float = setting(DEFAULT_DESCRIBE_TPS, "DescribeJobs calls per second.")
    signing_secret: str | None = setting(
        None,
        "The Secrets Manager secret (ARN or name) whose key ring signs payloads and results "
        "([security.md](security.md)).",
        stack_output=StackOutput.SIGNING_SECRET_ARN,
        default_text="required",
    )
    job_tags: str = setting(
        "",
        'User tags on every job, a JSON object such as `{"team": "ml"}`: the stack\'s `job_tags` (`cdk.json`). '
        "`--tag` adds to them.",
        stack_output=StackOutput.JOB_TAGS,
        metavar="JSON",
    )
    image_python: str | None = setting(
        None,
        "Python `major.minor` of the job image; the worker refuses to start when the clients' (`client_python`) "
        "differs, since no task could load.",
        stack_output=StackOutput.PYTHON_VERSION,
        default_text="not checked",
    )
    image_architecture: str | None = setting(
        None,
        "CPU architecture of the job image (`x86_64` or `arm64`), logged at start.",
        stack_output=StackOutput.ARCHITECTURE,
        default_text="unknown",
    )
    stack_outputs: str | None = setting(
        None, "The file `cdk deploy --outputs-file` writes; fills the settings above.", metavar="FILE.json"
    )
    stack: str | None = setting(
        None, "Picks the stack in an outputs file, or is read with CloudFormation DescribeStacks.", metavar="NAME"
    )

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
        if self.signing_secret is not None and not _SECRET_PATTERN.match(self.signing_secret):
            raise ValueError(
                f"signing_secret {self.signing_secret!r} is not a Secrets Manager secret name or ARN "
                f"({_where('signing_secret')})"
            )
        if self.image_python is not None and not _PYTHON_PATTERN.match(self.image_python):
            raise ValueError(
                f"image_python takes major.minor like 3.11 ({_where('image_python')}), got {self.image_python!r}"
            )
        if self.image_architecture is not None and self.image_architecture not in ARCHITECTURES:
            raise ValueError(
                f"image_architecture must be one of {', '.join(ARCHITECTURES)} ({_where('image_architecture')}), "
                f"got {self.image_architecture!r}"
            )
        check_positive(self, "submit_tps", maximum=MAX_SUBMIT_TPS, why=", AWS's account limit")
        check_positive(self, "describe_tps")
        check_user_tags(self.user_tags, source=f"job_tags ({_where('job_tags')})")

    @property
    def user_tags(self) -> dict[str, str]:
        """``job_tags`` as a mapping; ValueError naming the setting when it is not a JSON object of strings."""
        if not self.job_tags:
            return {}
        try:
            tags = json.loads(self.job_tags)
        except json.JSONDecodeError as exc:
            raise ValueError(f"job_tags is not JSON ({_where('job_tags')}): {exc}") from exc
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ValueError(f'job_tags must be a JSON object of strings, e.g. {{"team": "ml"}} ({_where("job_tags")})')
        return {str(key): value for key, value in tags.items()}


def _where(name: str) -> str:
    return where(AwsBatchSettings, name)


CloudFormationClientFactory = Callable[[str | None, str | None], "CloudFormationClient"]


def _default_cloudformation_client(region: str | None, endpoint_url: str | None) -> CloudFormationClient:
    config = client_config(max_retries=5)
    return boto3.Session(region_name=region).client(
        "cloudformation", region_name=region, endpoint_url=endpoint_url, config=config
    )


def load_aws_batch_settings(
    args: argparse.Namespace,
    env: Mapping[str, str],
    from_file: Mapping[str, Any] | None = None,
    *,
    cloudformation_client_factory: CloudFormationClientFactory | None = None,
) -> AwsBatchSettings:
    """Build settings from flags > environment > config file > stack outputs > defaults (see the module docstring).

    ``cloudformation_client_factory(region, endpoint_url)`` makes the client for DescribeStacks (tests inject one).
    """
    explicit = config.explicit_values(AwsBatchSettings, args, env, from_file or {})
    outputs: dict[str, Any] = {}
    stack = explicit.get("stack")
    aws_region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if explicit.get("stack_outputs"):
        outputs = _read_outputs_file(explicit["stack_outputs"], stack)
    elif stack:
        factory = cloudformation_client_factory or _default_cloudformation_client
        client = factory(explicit.get("region") or aws_region or None, explicit.get("endpoint_url"))
        outputs = _describe_stack_outputs(client, stack)
    fallback: dict[str, Any] = {"region": aws_region}  # the last fallback, independent of os.environ
    for field in config.fields(AwsBatchSettings):
        value = outputs.get(field.metadata.get("stack_output", ""))
        if value:
            fallback[field.name] = value.strip("/") if field.name == "prefix" else value
    values = {**fallback, **explicit}
    missing = [name for name in REQUIRED if not values.get(name)]
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


def check_image_python(aws: AwsBatchSettings, worker: WorkerSettings) -> None:
    """Refuse to start when the job image's Python (the stack's ``PythonVersion``) is not the clients': cloudpickle
    payloads load only on the Python minor they were made with, so every task would fail in its job."""
    from scaler_aws_batch.wire import python_version_tag

    if aws.image_python is None:
        return
    client_python = worker.client_python or python_version_tag()
    if client_python == aws.image_python:
        return
    source = "client_python" if worker.client_python else "this worker's own Python, the default of client_python"
    raise ValueError(
        f"the job image runs Python {aws.image_python} (stack output PythonVersion, {_where('image_python')}) but the "
        f"clients use Python {client_python} ({source}; {where(WorkerSettings, 'client_python')}): every task "
        f"would fail to load. Redeploy the stack with `npx cdk deploy -c python_version={client_python}`, or run "
        f"the clients on Python {aws.image_python} and tell the worker so with --client-python {aws.image_python}"
    )


def build_aws_batch(aws: AwsBatchSettings, worker: WorkerSettings) -> BackendSetup:
    """The worker's AWS Batch backend and S3 store."""
    from scaler_aws_batch.capabilities import QueueRouting
    from scaler_aws_batch.errors import SigningKeyError
    from scaler_aws_batch.signing import read_secret
    from scaler_aws_batch.stores.s3 import S3Store, s3_client_config, s3_session

    check_image_python(aws, worker)
    if aws.signing_secret is None:
        raise ValueError(
            f"no signing secret: pass {_where('signing_secret')} (the stack output SigningSecretArn) or point at "
            "the deployed stack with --stack-outputs / --stack; payloads and results are signed with its key"
        )
    try:
        # A secret ARN carries its region; a region mismatch is then reported by the start-up checks, by name.
        secret_region = None if aws.signing_secret.startswith("arn:") else aws.region
        keys = read_secret(aws.signing_secret, region=secret_region, endpoint_url=aws.endpoint_url)
    except SigningKeyError as exc:
        raise ValueError(str(exc)) from exc
    logger.info(
        "job image: Python %s, %s (stack outputs PythonVersion, Architecture)",
        aws.image_python or "unknown",
        aws.image_architecture or "unknown architecture",
    )
    # No fixed session: the backend and the store build theirs from the default credential chain, and build
    # them again when AWS refuses the credentials (see aws_calls).
    backend = build_aws_batch_backend(aws)
    region, endpoint_url = aws.region, aws.endpoint_url

    def s3_client() -> S3Client:  # a new session reads the credential chain again (see aws_calls)
        return s3_session(region_name=region).client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=s3_client_config()
        )

    store = S3Store(aws.bucket, aws.prefix, client_factory=s3_client)
    routing = QueueRouting(on_demand=aws.on_demand_queue, gpu=aws.gpu_queue)
    return BackendSetup(backend, store, routing, keys, job_tags=aws.user_tags, deployment=aws.job_queue)


#: How long a job may stay out of ListJobs after its SubmitJob returned.
LISTING_LAG_SECONDS: Final = 10.0

KIND = BackendKind(
    name="aws-batch",
    settings=AwsBatchSettings,
    build=build_aws_batch,
    min_timeout_seconds=MIN_TIMEOUT_SECONDS,
    # DescribeJobs shares the account's Batch API budget; results arrive through S3 listings meanwhile.
    describe_interval_max_seconds=10.0,
    # A SubmitJob sent by an adapter killed meanwhile may create its job until the read timeout; ListJobs may then
    # lag a few seconds (eventual consistency).
    submit_landing_seconds=READ_TIMEOUT_SECONDS + LISTING_LAG_SECONDS,
    load=load_aws_batch_settings,
)


# ---------------------------------------------------------------------------------------------------- helpers


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{what} {path!r} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path!r} is not valid JSON: {exc}") from exc


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
