"""The one job definition every task runs: the runner image, a locked-down container, Spot-aware retries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Size
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

#: The image builds from the repository root (it installs this repo's package) with ``container/Dockerfile``.
#: The root ``.dockerignore`` keeps the build context (and CDK's asset staging copy) to what the image needs.
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "container/Dockerfile"
#: The container's only writable path: a scratch volume, since the root filesystem is read-only.
SCRATCH_PATH = "/tmp"
LOG_STREAM_PREFIX = "job"
ECS_TASKS = "ecs-tasks.amazonaws.com"


class JobDefinition(Construct):
    """An EC2 job definition running ``command`` from the image built from ``container/``.

    Not privileged, read-only root filesystem, ``/tmp`` as scratch, logs to ``log_group``. Retries only when EC2
    reclaimed the Spot host, exits on anything else (Batch would retry every failure otherwise).
    """

    log_group: logs.LogGroup
    job_role: iam.Role
    execution_role: iam.Role
    image_asset: ecs.AssetImage
    container: batch.EcsEc2ContainerDefinition
    job_definition: batch.EcsJobDefinition

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        command: Sequence[str],
        parameters: dict[str, str],
        python_version: str,
        vcpus: int,
        memory_mib: int,
        timeout: Duration,
        retry_attempts: int,
        log_retention: logs.RetentionDays,
        destroy_on_delete: bool,
        environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY if destroy_on_delete else RemovalPolicy.RETAIN,
        )
        # What the task's own code may do; the stack grants it the bucket prefix and nothing else.
        self.job_role = iam.Role(
            self, "JobRole", assumed_by=iam.ServicePrincipal(ECS_TASKS), description="Scaler Batch job: task code"
        )
        # What ECS needs to start the container; the image and log driver below grant it ECR pull and log writes.
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal(ECS_TASKS),
            description="Scaler Batch job: pull the runner image, write the job log",
        )
        self.image_asset = ecs.ContainerImage.from_asset(
            str(REPO_ROOT),
            file=DOCKERFILE,
            build_args={"PYTHON_VERSION": python_version},
            platform=ecr_assets.Platform.LINUX_AMD64,
            ignore_mode=IgnoreMode.DOCKER,
        )
        self.container = batch.EcsEc2ContainerDefinition(
            self,
            "Container",
            image=self.image_asset,
            command=list(command),
            cpu=vcpus,
            memory=Size.mebibytes(memory_mib),
            privileged=False,
            readonly_root_filesystem=True,
            volumes=[batch.EcsVolume.host(name="scratch", container_path=SCRATCH_PATH)],
            environment={"TMPDIR": SCRATCH_PATH, **(environment or {})},
            job_role=self.job_role,
            execution_role=self.execution_role,
            logging=ecs.LogDriver.aws_logs(stream_prefix=LOG_STREAM_PREFIX, log_group=self.log_group),
        )
        self.job_definition = batch.EcsJobDefinition(
            self,
            "JobDefinition",
            container=self.container,
            parameters=dict(parameters),
            timeout=timeout,
            retry_attempts=retry_attempts,
            retry_strategies=[
                batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
            propagate_tags=True,
        )
