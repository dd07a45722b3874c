"""cdk-nag (v3) acknowledgments: each names one exact finding on the narrowest construct and says why it is fine.

cdk-nag v3 runs as a CDK policy-validation plugin (``Validations.of(app).add_plugins(AwsSolutionsChecks(app))``); a
finding fails ``cdk synth``, and ``Validations.of(construct).acknowledge(...)`` accepts it. Each finding of a
multi-finding rule (IAM4, IAM5) is acknowledged on its own, so a new wildcard always fails synth until reviewed.
``docs/deploy.md`` lists these acknowledgments; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, CfnElement, Stack, Validations
from aws_cdk import aws_batch as batch
from constructs import IConstruct

if TYPE_CHECKING:
    from stacks.scaler_batch_stack import ScalerBatchStack

#: The prefix CDK's validation report puts before cdk-nag's rule ids.
PLUGIN = "AwsSolutions::"
ECS_INSTANCE_POLICY = "arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
#: The wildcard actions ``Bucket.grant_read_write`` gives, on the bucket and on ``prefix*`` only.
GRANT_READ_WRITE_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*")


def acknowledge(scope: IConstruct, findings: Iterable[str], reason: str) -> None:
    """Acknowledge each cdk-nag finding id (``AwsSolutions-IAM5[Resource::*]``) on ``scope`` with ``reason``."""
    Validations.of(scope).acknowledge(*(Acknowledgment(id=PLUGIN + finding, reason=reason) for finding in findings))


def _ref(stack: Stack, construct: IConstruct) -> str:
    """How cdk-nag writes a resource's logical id inside a finding, e.g. ``<TaskBucket08C17A58.Arn>``."""
    default_child = construct.node.default_child
    assert isinstance(default_child, CfnElement)
    return stack.get_logical_id(default_child)


def acknowledge_findings(stack: ScalerBatchStack) -> None:
    prefix = stack.task_bucket.prefix
    bucket_objects = f"Resource::<{_ref(stack, stack.task_bucket.bucket)}.Arn>/{prefix}*"

    acknowledge(
        stack.network.vpc,
        ["AwsSolutions-VPC7"],
        "Nothing listens in this VPC (the security group has no ingress) and the jobs only call AWS APIs; flow logs"
        " would add CloudWatch ingestion cost to every job. Enable them on the VPC if your audit rules require it.",
    )
    acknowledge(
        stack.task_bucket.bucket,
        ["AwsSolutions-S1"],
        "The bucket only holds short-lived task payloads and results that expire by lifecycle rule; server access"
        " logs would need a second bucket and cost more than the data. Use CloudTrail S3 data events to audit access.",
    )
    for environment in (stack.compute.spot_environment, stack.compute.on_demand_environment,
                        stack.compute.gpu_environment):  # fmt: skip
        if isinstance(environment, batch.ManagedEc2EcsComputeEnvironment):  # Fargate has no instance role
            acknowledge(
                environment,
                [f"AwsSolutions-IAM4[Policy::{ECS_INSTANCE_POLICY}]"],
                "The ECS container-instance role of a Batch compute environment: AWS maintains this policy for the"
                " ECS agent (register the instance, pull images, send logs); task code never gets it (job role).",
            )
    acknowledge(
        stack.job.job_role,
        [
            *(f"AwsSolutions-IAM5[Action::{action}]" for action in GRANT_READ_WRITE_ACTIONS),
            f"AwsSolutions-IAM5[{bucket_objects}]",
        ],
        "Bucket.grant_read_write scoped to the payload prefix: the task reads its payload and writes its result under"
        " the prefix (keys are per task, so the resource must be prefix*); no other bucket or prefix.",
    )
    acknowledge(
        stack.job.execution_role,
        ["AwsSolutions-IAM5[Resource::*]"],
        "ecr:GetAuthorizationToken has no resource-level permission and needs Resource '*'; the image pull itself is"
        " scoped to the asset repository, and log writes to the job log group.",
    )
    log_streams = (
        "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
        f"<{_ref(stack, stack.job.log_group)}>:log-stream:*"
    )
    policy = stack.access.policy
    acknowledge(
        policy,
        ["AwsSolutions-IAM5[Resource::*]"],
        "batch:DescribeJobs, batch:ListJobs, batch:DescribeJobDefinitions and batch:DescribeComputeEnvironments have"
        " no resource-level permissions and need Resource '*'; they only read job status, the job definition's command"
        " and the compute environments' types. Every write action in this"
        " policy is scoped to ARNs.",
    )
    acknowledge(
        policy,
        ["AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job/*]"],
        "Job ids are only known after SubmitJob, so job ARNs are matched by job/*; TerminateJob and CancelJob also"
        " require the aws:ResourceTag/scaler-batch:adapter-id tag, and TagResource only allows scaler-batch:* keys.",
    )
    acknowledge(
        policy,
        [f"AwsSolutions-IAM5[{bucket_objects}]"],
        "The adapter writes payloads and reads results under the payload prefix only; keys are per task, so prefix*.",
    )
    acknowledge(
        policy,
        [f"AwsSolutions-IAM5[Resource::{log_streams}]"],
        "logs:GetLogEvents on the streams of the job log group only (stream names are per job), to show a failed"
        " job's last lines.",
    )
