"""Batch compute: Spot and On-Demand compute environments (EC2 instances that scale to zero, or Fargate), and the
job queues over them."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

#: Why a job may sit in RUNNABLE; the queue cancels it after the configured time for each of them.
RUNNABLE_REASONS: tuple[batch.JobStateTimeLimitActionsReason, ...] = (
    batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
    batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
    batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
)
STANDARD_IMAGE = batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2023)
GPU_IMAGE = batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2023_NVIDIA)
#: Containers must not reach the instance role through IMDS: one hop keeps IMDS on the host only.
IMDS_HOP_LIMIT = 1
#: Where the ECS agent on a container instance reads its settings at boot.
ECS_CONFIG_FILE = "/etc/ecs/ecs.config"


def ecs_agent_user_data(image_pull_behavior: str) -> ec2.MultipartUserData | None:
    """Launch-template user data setting ``ECS_IMAGE_PULL_BEHAVIOR``; None keeps the agent's default (no user data).

    Batch merges a launch template's user data with its own only in MIME multi-part form, hence MultipartUserData.
    """
    if image_pull_behavior == "default":
        return None
    shell = ec2.UserData.for_linux()
    shell.add_commands(f"echo ECS_IMAGE_PULL_BEHAVIOR={image_pull_behavior} >> {ECS_CONFIG_FILE}")
    user_data = ec2.MultipartUserData()
    user_data.add_user_data_part(shell, ec2.MultipartBody.SHELL_SCRIPT, True)
    return user_data


def instance_class(family: str) -> ec2.InstanceClass:
    """The CDK enum member for an instance family name such as ``m6i`` (Batch accepts families or exact types)."""
    member = ec2.InstanceClass.__members__.get(family.upper().replace("-", "_"))
    if member is None:
        raise ValueError(f"instance family {family!r} is unknown to aws-cdk-lib: use a family such as 'm6i' or a type")
    return member


class Compute(Construct):
    """Managed EC2 compute environments (minimum 0 vCPUs unless ``min_vcpus`` asks for warm capacity, so an idle
    stack runs no instance), or Fargate Spot and Fargate ones (``fargate``: no instances at all), and three queues:

    * ``default_queue``: Spot first, then On-Demand (each one optional, per the config);
    * ``on_demand_queue``: On-Demand only, for work that must not be interrupted;
    * ``gpu_queue``: On-Demand GPU instances with the ECS GPU AMI, when enabled (EC2 only: Fargate has no GPUs).

    Instances run the ECS-optimized Amazon Linux 2023 AMI (its NVIDIA variant for GPU), updated by Batch; it has an
    x86_64 and an arm64 (Graviton) build, picked by instance type.
    """

    launch_template: ec2.LaunchTemplate | None
    spot_environment: batch.ManagedEc2EcsComputeEnvironment | batch.FargateComputeEnvironment | None
    on_demand_environment: batch.ManagedEc2EcsComputeEnvironment | batch.FargateComputeEnvironment
    gpu_environment: batch.ManagedEc2EcsComputeEnvironment | None
    default_queue: batch.JobQueue
    on_demand_queue: batch.JobQueue
    gpu_queue: batch.JobQueue | None

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        fargate: bool,
        max_vcpus: int,
        instance_types: Sequence[str],
        spot: bool,
        on_demand_fallback: bool,
        gpu: bool,
        gpu_instance_types: Sequence[str],
        gpu_max_vcpus: int,
        runnable_timeout: Duration,
        min_vcpus: int = 0,
        image_pull_behavior: str = "default",
    ) -> None:
        super().__init__(scope, construct_id)
        self._vpc = vpc
        self._subnets = subnets
        self._security_group = security_group
        self._runnable_timeout = runnable_timeout
        self.launch_template = None
        if fargate:  # min_vcpus and image_pull_behavior are EC2 settings (the config refuses them with Fargate)
            self.spot_environment = self._fargate("SpotEnvironment", spot=True, max_vcpus=max_vcpus) if spot else None
            self.on_demand_environment = self._fargate("OnDemandEnvironment", spot=False, max_vcpus=max_vcpus)
        else:
            self.launch_template = ec2.LaunchTemplate(
                self,
                "LaunchTemplate",
                require_imdsv2=True,
                http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
                http_put_response_hop_limit=IMDS_HOP_LIMIT,
                user_data=ecs_agent_user_data(image_pull_behavior),
            )
            # Warm starts: only the first environment of the default queue keeps min_vcpus running; the others (and a
            # default of 0) scale to zero.
            warm_spot = min_vcpus if spot else 0
            warm_on_demand = 0 if spot else min_vcpus

            self.spot_environment = (
                self._environment(
                    "SpotEnvironment",
                    spot=True,
                    allocation=batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
                    max_vcpus=max_vcpus,
                    instance_types=instance_types,
                    min_vcpus=warm_spot,
                )
                if spot
                else None
            )
            self.on_demand_environment = self._environment(
                "OnDemandEnvironment",
                spot=False,
                allocation=batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
                max_vcpus=max_vcpus,
                instance_types=instance_types,
                min_vcpus=warm_on_demand,
            )
        default_order: list[batch.IComputeEnvironment] = []
        if self.spot_environment is not None:
            default_order.append(self.spot_environment)
        if on_demand_fallback or self.spot_environment is None:
            default_order.append(self.on_demand_environment)
        self.default_queue = self._queue("DefaultQueue", default_order)
        self.on_demand_queue = self._queue("OnDemandQueue", [self.on_demand_environment])

        self.gpu_environment = None
        self.gpu_queue = None
        if gpu and not fargate:
            self.gpu_environment = self._environment(
                "GpuEnvironment",
                spot=False,
                allocation=batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
                max_vcpus=gpu_max_vcpus,
                instance_types=gpu_instance_types,
                images=[GPU_IMAGE],
            )
            self.gpu_queue = self._queue("GpuQueue", [self.gpu_environment])

    @property
    def queues(self) -> list[batch.JobQueue]:
        """Every queue the adapter may submit to."""
        queues = [self.default_queue, self.on_demand_queue]
        if self.gpu_queue is not None:
            queues.append(self.gpu_queue)
        return queues

    def _environment(
        self,
        construct_id: str,
        *,
        spot: bool,
        allocation: batch.AllocationStrategy,
        max_vcpus: int,
        instance_types: Sequence[str],
        images: Sequence[batch.EcsMachineImage] | None = None,
        min_vcpus: int = 0,
    ) -> batch.ManagedEc2EcsComputeEnvironment:
        optimal = list(instance_types) == ["optimal"]
        return batch.ManagedEc2EcsComputeEnvironment(
            self,
            construct_id,
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            security_groups=[self._security_group],
            launch_template=self.launch_template,
            spot=spot,
            allocation_strategy=allocation,
            minv_cpus=min_vcpus,
            maxv_cpus=max_vcpus,
            use_optimal_instance_classes=optimal,
            instance_types=[ec2.InstanceType(name) for name in instance_types if "." in name],
            instance_classes=[instance_class(name) for name in instance_types if "." not in name and not optimal],
            images=list(images) if images is not None else [STANDARD_IMAGE],
            update_to_latest_image_version=True,
        )

    def _fargate(self, construct_id: str, *, spot: bool, max_vcpus: int) -> batch.FargateComputeEnvironment:
        return batch.FargateComputeEnvironment(
            self,
            construct_id,
            vpc=self._vpc,
            vpc_subnets=self._subnets,
            security_groups=[self._security_group],
            spot=spot,
            maxv_cpus=max_vcpus,
        )

    def _queue(self, construct_id: str, order: Sequence[batch.IComputeEnvironment]) -> batch.JobQueue:
        return batch.JobQueue(
            self,
            construct_id,
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=environment, order=index)
                for index, environment in enumerate(order, start=1)
            ],
            job_state_time_limit_actions=[
                batch.JobStateTimeLimitAction(
                    max_time=self._runnable_timeout,
                    reason=reason,
                    action=batch.JobStateTimeLimitActionsAction.CANCEL,
                    state=batch.JobStateTimeLimitActionsState.RUNNABLE,
                )
                for reason in RUNNABLE_REASONS
            ],
        )
