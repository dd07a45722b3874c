"""The one job definition every task runs: the runner image, a locked-down container, Spot-aware retries.

On EC2 the container runs on the compute environments' instances; on Fargate it runs as a Fargate task in the
private subnets with no public IP. Both are non-privileged with a read-only root filesystem and ``/tmp`` as scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnResource, Duration, RemovalPolicy, Size
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from scaler_aws_batch.contracts import JOB_SCRATCH_PATH, JOB_SCRATCH_VOLUME, SPOT_RETRY_EVALUATE_ON_EXIT, Architecture

LOG_STREAM_PREFIX = "job"
ECS_TASKS = "ecs-tasks.amazonaws.com"
FARGATE_ARCHITECTURES = {
    Architecture.X86_64: ecs.CpuArchitecture.X86_64,
    Architecture.ARM64: ecs.CpuArchitecture.ARM64,
}


def retry_strategies() -> list[batch.RetryStrategy]:
    """:data:`SPOT_RETRY_EVALUATE_ON_EXIT` (retry lost Spot capacity, exit on anything else) as CDK objects."""
    strategies: list[batch.RetryStrategy] = []
    for entry in SPOT_RETRY_EVALUATE_ON_EXIT:
        action = batch.Action.RETRY if entry["action"] == "RETRY" else batch.Action.EXIT
        reason = batch.Reason.custom(on_status_reason=entry.get("onStatusReason"), on_reason=entry.get("onReason"))
        strategies.append(batch.RetryStrategy.of(action, reason))
    return strategies


class JobDefinition(Construct):
    """A job definition running ``command`` from ``image`` on EC2 or (``fargate``) on Fargate.

    Not privileged, read-only root filesystem, ``/tmp`` as scratch, logs to ``log_group``. Retries only when Spot
    capacity was lost (EC2 reclaimed the host, or Fargate Spot interrupted the task), exits on anything else (Batch
    would retry every failure otherwise).
    """

    log_group: logs.LogGroup
    job_role: iam.Role
    execution_role: iam.Role
    container: batch.EcsEc2ContainerDefinition | batch.EcsFargateContainerDefinition
    job_definition: batch.EcsJobDefinition

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        command: Sequence[str],
        parameters: dict[str, str],
        image: ecs.ContainerImage,
        fargate: bool,
        architecture: str,
        vcpus: float,
        memory_mib: int,
        ephemeral_storage_gib: int,
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
        # The same locked-down container on both platforms: read-only root, /tmp as scratch, the stack's roles and log.
        common: dict[str, Any] = {
            "image": image,
            "command": list(command),
            "memory": Size.mebibytes(memory_mib),
            "readonly_root_filesystem": True,
            "volumes": [batch.EcsVolume.host(name=JOB_SCRATCH_VOLUME, container_path=JOB_SCRATCH_PATH)],
            "environment": {"TMPDIR": JOB_SCRATCH_PATH, **(environment or {})},
            "job_role": self.job_role,
            "execution_role": self.execution_role,
            "logging": ecs.LogDriver.aws_logs(stream_prefix=LOG_STREAM_PREFIX, log_group=self.log_group),
        }
        if fargate:
            self.container = batch.EcsFargateContainerDefinition(
                self,
                "Container",
                cpu=vcpus,
                # Private subnets: the task needs no public address to reach ECR, S3 and the logs.
                assign_public_ip=False,
                ephemeral_storage_size=Size.gibibytes(ephemeral_storage_gib),
                fargate_platform_version=ecs.FargatePlatformVersion.LATEST,
                fargate_cpu_architecture=FARGATE_ARCHITECTURES[architecture],
                fargate_operating_system_family=ecs.OperatingSystemFamily.LINUX,
                **common,
            )
        else:
            self.container = batch.EcsEc2ContainerDefinition(
                self, "Container", cpu=int(vcpus), privileged=False, **common
            )
        self.job_definition = batch.EcsJobDefinition(
            self,
            "JobDefinition",
            container=self.container,
            parameters=dict(parameters),
            timeout=timeout,
            retry_attempts=retry_attempts,
            retry_strategies=retry_strategies(),
            propagate_tags=True,
        )
        if fargate:
            resource = self.job_definition.node.default_child
            assert isinstance(resource, CfnResource)
            # Fargate takes no host volumes: a volume with only a name is task storage (the ephemeral storage above).
            resource.add_property_override("ContainerProperties.Volumes", [{"Name": JOB_SCRATCH_VOLUME}])
            # Fargate never runs privileged containers; AWS accepts an explicit false, which keeps the rule visible.
            resource.add_property_override("ContainerProperties.Privileged", False)
