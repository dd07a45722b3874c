"""The one stack: wires the network, task bucket, compute, job definition and adapter access together."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from scaler_aws_batch.contracts import PAYLOAD_PARAMETER, RUNNER_COMMAND, StackOutput
from stacks.access import AdapterAccess
from stacks.compute import Compute
from stacks.config import ComputeChoice, StackConfig
from stacks.job_definition import JobDefinition
from stacks.job_image import job_image
from stacks.job_secrets import JobSecrets
from stacks.nag import acknowledge_findings
from stacks.network import Network
from stacks.task_bucket import TaskBucket

#: The job definition's default for ``Ref::payload``: a job submitted without the parameter fails fast and clearly.
PAYLOAD_DEFAULT = "none"


class ScalerBatchStack(Stack):
    """Everything the Scaler AWS Batch adapter needs. The output ids are read by the runtime: do not rename them."""

    network: Network
    task_bucket: TaskBucket
    compute: Compute
    job: JobDefinition
    access: AdapterAccess
    job_secrets: JobSecrets

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        fargate = config.compute is ComputeChoice.FARGATE
        self.network = Network(
            self,
            "Network",
            vpc_id=config.vpc_id,
            max_azs=config.max_azs,
            nat_gateways=config.nat_gateways,
            parameter_store=any(":ssm:" in arn for arn in config.job_secrets.values()),
        )
        self.task_bucket = TaskBucket(
            self,
            "TaskBucket",
            prefix=config.payload_prefix,
            retention_days=config.payload_retention_days,
            destroy_on_delete=config.destroy_on_delete,
        )
        self.compute = Compute(
            self,
            "Compute",
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            security_group=self.network.security_group,
            fargate=fargate,
            max_vcpus=config.max_vcpus,
            instance_types=config.instance_types,
            spot=config.spot,
            on_demand_fallback=config.on_demand_fallback,
            gpu=config.gpu_queue,
            gpu_instance_types=config.gpu_instance_types,
            gpu_max_vcpus=config.gpu_max_vcpus,
            runnable_timeout=Duration.seconds(config.runnable_timeout_seconds),
            min_vcpus=config.min_vcpus,
            image_pull_behavior=config.image_pull_behavior,
        )
        self.job = JobDefinition(
            self,
            "Job",
            command=RUNNER_COMMAND,
            parameters={PAYLOAD_PARAMETER: PAYLOAD_DEFAULT},
            image=job_image(
                self,
                image_uri=config.image_uri,
                python_version=config.python_version,
                architecture=config.architecture.value,
                requirements=config.requirements_path,
                system_packages=config.system_packages,
            ),
            fargate=fargate,
            architecture=config.architecture.value,
            vcpus=config.job_vcpus,
            memory_mib=config.job_memory_mib,
            ephemeral_storage_gib=config.ephemeral_storage_gib,
            timeout=Duration.seconds(config.job_timeout_seconds),
            retry_attempts=config.retry_attempts,
            log_retention=retention_days(config.log_retention_days),
            destroy_on_delete=config.destroy_on_delete,
        )
        self.job_secrets = JobSecrets(self.job.job_definition, self.job.execution_role)
        self.job_secrets.add(config.job_secrets)
        self.access = AdapterAccess(
            self,
            "AdapterAccess",
            queues=self.compute.queues,
            job_definition=self.job.job_definition,
            bucket=self.task_bucket.bucket,
            prefix=config.payload_prefix,
            log_group=self.job.log_group,
            user_tag_keys=[*config.job_tags, *config.worker_tag_keys],
        )

        # Grants: the task code reads its payload and writes its result under the prefix, nothing more.
        self.task_bucket.bucket.grant_read_write(self.job.job_role, f"{config.payload_prefix}*")

        self._outputs(config)
        acknowledge_findings(self)

    def _outputs(self, config: StackConfig) -> None:
        compute = self.compute
        CfnOutput(
            self, StackOutput.JOB_QUEUE_ARN, value=compute.default_queue.job_queue_arn, description="Default job queue"
        )
        CfnOutput(
            self,
            StackOutput.ON_DEMAND_JOB_QUEUE_ARN,
            value=compute.on_demand_queue.job_queue_arn,
            description="On-Demand",
        )
        if compute.gpu_queue is not None:
            CfnOutput(
                self, StackOutput.GPU_JOB_QUEUE_ARN, value=compute.gpu_queue.job_queue_arn, description="GPU job queue"
            )
        CfnOutput(self, StackOutput.JOB_DEFINITION_ARN, value=self.job.job_definition.job_definition_arn)
        CfnOutput(self, StackOutput.BUCKET_NAME, value=self.task_bucket.bucket.bucket_name)
        CfnOutput(self, StackOutput.PAYLOAD_PREFIX, value=self.task_bucket.prefix)
        CfnOutput(self, StackOutput.REGION, value=Aws.REGION)
        CfnOutput(self, StackOutput.LOG_GROUP_NAME, value=self.job.log_group.log_group_name)
        # The worker compares its clients' Python with these before it starts (a mismatch fails every task).
        CfnOutput(
            self,
            StackOutput.PYTHON_VERSION,
            value=config.python_version,
            description="Python major.minor of the job image; clients must use the same",
        )
        CfnOutput(
            self,
            StackOutput.ARCHITECTURE,
            value=config.architecture.value,
            description="CPU architecture of the job image",
        )
        CfnOutput(
            self,
            StackOutput.ADAPTER_POLICY_ARN,
            value=self.access.policy.managed_policy_arn,
            description="Attach to the role or user that runs the Scaler adapter",
            export_name=f"{self.stack_name}-{StackOutput.ADAPTER_POLICY_ARN}",
        )
        if config.job_tags:
            CfnOutput(
                self,
                StackOutput.JOB_TAGS,
                value=json.dumps(dict(config.job_tags), sort_keys=True, separators=(",", ":")),
                description="User tags (JSON) the worker puts on every job",
            )


_RETENTION: dict[int, logs.RetentionDays] = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def retention_days(days: int) -> logs.RetentionDays:
    """The CloudWatch retention for ``days`` (the config has checked it is one CloudWatch accepts)."""
    return _RETENTION[days]
