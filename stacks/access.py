"""What the Scaler adapter (wherever it runs) may do: one managed policy to attach to its role or user."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from scaler_aws_batch.contracts import JobTag

#: The runtime tags every job it submits with keys under this prefix; TerminateJob and CancelJob are allowed only on
#: jobs that carry the adapter tag, so the adapter cannot stop other people's jobs.
TAG_KEY_PATTERN = f"{JobTag.PREFIX}*"


class AdapterAccess(Construct):
    """A customer-managed policy: submit to exactly these queues with exactly this job definition, stop only the
    jobs it tagged, describe and list jobs and read the job definition (no resource-level permission exists for
    those), read and write the
    payload prefix, read the job log and the signing secret, and read this stack's outputs."""

    policy: iam.ManagedPolicy

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Sequence[batch.IJobQueue],
        job_definition: batch.IJobDefinition,
        bucket: s3.IBucket,
        prefix: str,
        log_group: logs.ILogGroup,
        signing_secret: secretsmanager.ISecret,
        user_tag_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # Pseudo-parameters rather than Stack.format_arn: the ARNs (and the cdk-nag findings that quote them) stay
        # the same whether or not the stack has a concrete account and region.
        arn_head = f"arn:{Aws.PARTITION}:batch:{Aws.REGION}:{Aws.ACCOUNT_ID}"
        jobs_arn = f"{arn_head}:job/*"
        # SubmitJob is authorized on the queue and on the job definition; a job definition referenced by name alone
        # is checked against the ARN without ":revision", so both forms are listed.
        job_definition_unversioned_arn = f"{arn_head}:job-definition/{job_definition.job_definition_name}"
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"Scaler Batch adapter for stack {stack.stack_name}: submit, watch and stop its jobs",
            statements=[
                iam.PolicyStatement(
                    sid="SubmitToOwnQueuesWithOwnJobDefinition",
                    actions=["batch:SubmitJob"],
                    resources=[
                        *(queue.job_queue_arn for queue in queues),
                        job_definition.job_definition_arn,
                        job_definition_unversioned_arn,
                    ],
                ),
                iam.PolicyStatement(
                    sid="TagOwnJobsAtSubmit",
                    actions=["batch:TagResource"],
                    resources=[jobs_arn],
                    conditions={"ForAllValues:StringLike": {"aws:TagKeys": [TAG_KEY_PATTERN, *user_tag_keys]}},
                ),
                iam.PolicyStatement(
                    sid="StopOnlyJobsTaggedByAnAdapter",
                    actions=["batch:TerminateJob", "batch:CancelJob"],
                    resources=[jobs_arn],
                    conditions={"StringLike": {f"aws:ResourceTag/{JobTag.ADAPTER_ID}": "*"}},
                ),
                iam.PolicyStatement(
                    sid="WatchJobs",
                    actions=[
                        "batch:DescribeJobs",
                        "batch:ListJobs",
                        "batch:DescribeJobDefinitions",
                        "batch:DescribeComputeEnvironments",  # usage records: Spot, On-Demand or Fargate
                    ],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    # Queues ENABLED and VALID, and the largest instance they launch (with DescribeComputeEnvironments).
                    sid="CheckQueuesAtStart",
                    actions=["batch:DescribeJobQueues", "ec2:DescribeInstanceTypes"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    # Payloads, results, and the adapter id's lease (leases/<id>: a conditional PutObject creates
                    # and renews it, GetObject reads its holder, DeleteObject releases it at exit).
                    sid="PayloadsAndResults",
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                    resources=[bucket.arn_for_objects(f"{prefix}*")],
                ),
                iam.PolicyStatement(
                    sid="ListPayloadPrefix",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                ),
                iam.PolicyStatement(
                    sid="ReadStackOutputs",  # `scaler-batch worker --stack NAME` reads this stack's outputs
                    actions=["cloudformation:DescribeStacks"],
                    resources=[Aws.STACK_ID],
                ),
                iam.PolicyStatement(
                    sid="ReadSigningKey",  # signs payloads and checks results
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[signing_secret.secret_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadJobLogs",
                    actions=["logs:GetLogEvents"],
                    resources=[
                        f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
                        f"{log_group.log_group_name}:log-stream:*"
                    ],
                ),
            ],
        )
