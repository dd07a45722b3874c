"""cdk-nag (v3) acknowledgments: each names one exact finding on the narrowest construct and says why it is fine.

cdk-nag v3 runs as a CDK policy-validation plugin (``Validations.of(app).add_plugins(AwsSolutionsChecks(app))``); a
finding fails ``cdk synth``, and ``Validations.of(construct).acknowledge(...)`` accepts it. Each finding of a
multi-finding rule (IAM4, IAM5) is acknowledged on its own, so a new wildcard always fails synth until reviewed.
``docs/deploy.md`` lists these acknowledgments; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aws_cdk import Acknowledgment, CfnElement, Validations
from aws_cdk import aws_batch as batch
from constructs import IConstruct

from stacks.access import AdapterAccess
from stacks.compute import Compute
from stacks.job_definition import JobDefinition
from stacks.network import Network
from stacks.signing_secret import SigningSecret
from stacks.task_bucket import TaskBucket


class NaggedStack(Protocol):
    """What :func:`acknowledge_findings` reads of the stack (its constructs), without importing the stack module
    that calls it."""

    @property
    def network(self) -> Network: ...
    @property
    def task_bucket(self) -> TaskBucket: ...
    @property
    def compute(self) -> Compute: ...
    @property
    def signing(self) -> SigningSecret: ...
    @property
    def job(self) -> JobDefinition: ...
    @property
    def access(self) -> AdapterAccess: ...
    def get_logical_id(self, element: CfnElement) -> str: ...


#: The prefix CDK's validation report puts before cdk-nag's rule ids.
PLUGIN = "AwsSolutions::"
ECS_INSTANCE_POLICY = "arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
#: The wildcard actions ``Bucket.grant_read_write`` gives, on the bucket and on ``prefix*`` only.
GRANT_READ_WRITE_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*")


def acknowledge(scope: IConstruct, findings: Iterable[str], reason: str) -> None:
    """Acknowledge each cdk-nag finding id (``AwsSolutions-IAM5[Resource::*]``) on ``scope`` with ``reason``."""
    Validations.of(scope).acknowledge(*(Acknowledgment(id=PLUGIN + finding, reason=reason) for finding in findings))


def _ref(stack: NaggedStack, construct: IConstruct) -> str:
    """How cdk-nag writes a resource's logical id inside a finding, e.g. ``<TaskBucket08C17A58.Arn>``."""
    default_child = construct.node.default_child
    assert isinstance(default_child, CfnElement)
    return stack.get_logical_id(default_child)


def acknowledge_findings(stack: NaggedStack) -> None:
    prefix = stack.task_bucket.prefix
    bucket_objects = f"Resource::<{_ref(stack, stack.task_bucket.bucket)}.Arn>/{prefix}*"

    acknowledge(
        stack.network.vpc,
        ["AwsSolutions-VPC7"],
        "Nothing listens in this VPC (the security group has no ingress) and the jobs only call AWS APIs; flow logs"
        " would add CloudWatch ingestion cost to every job. Enable them on the VPC if your audit rules require it.",
    )
    acknowledge(
        stack.signing.secret,
        ["AwsSolutions-SMG4"],
        "The signing key is rotated by hand with an overlap (docs/security.md): old and new key are both accepted"
        " while jobs signed with the old one finish. A rotation Lambda replacing the value at once would make"
        " every in-flight job's result unverifiable.",
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
        "batch:DescribeJobs, batch:ListJobs, batch:DescribeJobDefinitions, batch:DescribeComputeEnvironments,"
        " batch:DescribeJobQueues and ec2:DescribeInstanceTypes have no resource-level permissions and need"
        " Resource '*'; they only read job status, the job definition, the compute environments, the queues' state"
        " and instance sizes. Every write action in this policy is scoped to ARNs.",
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
