"""The synthesized template: what matters for cost, safety and the runtime's contract, asserted with ``Match``.

The app is synthesized once per module (with the cdk-nag gate on), from the repository's ``cdk.json`` context plus a
GPU queue and a non-default Python, so every optional resource is present. Logical ids are only ever looked up from
the template (by type, property or output), never written down.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from cdk_support import (
    CHECKOV_TEMPLATE_SKIPS,
    NO_ENV,
    STACK_NAME,
    TEST_ENV,
    cdk_json_context,
    cfn_lint_unexpected,
    checkov_failures,
    synth_to,
)
from scaler_aws_batch.backends.base import RUNNER_COMMAND
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, SPOT_RETRY_EVALUATE_ON_EXIT, JobTag, StackOutput

pytestmark = pytest.mark.cdk

from aws_cdk.assertions import Match, Template  # noqa: E402  (after cdk_support, which quiets jsii's banner)

CONTEXT = cdk_json_context(gpu_queue=True, python_version="3.12")
EXPECTED_OUTPUTS = StackOutput.every() - {StackOutput.JOB_TAGS}  # JobTags only with user tags
#: The tag key the runtime puts on every job it submits (scaler_aws_batch.engine); the stop permissions depend on it.
ADAPTER_TAG = JobTag.ADAPTER_ID


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="module")
def template_json(outdir: pathlib.Path) -> dict[str, Any]:
    return synth_to(outdir, CONTEXT, env=NO_ENV)


@pytest.fixture(scope="module")
def synthesized(outdir: pathlib.Path, template_json: dict[str, Any]) -> pathlib.Path:
    """The cloud assembly directory, once the app has been synthesized into it."""
    assert template_json
    return outdir


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


def _resources(template_json: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in template_json["Resources"].items() if value["Type"] == resource_type}


def _queue_id(template_json: dict[str, Any], output: str) -> str:
    value = template_json["Outputs"][output]["Value"]
    assert value["Fn::GetAtt"][1] == "JobQueueArn"
    return str(value["Fn::GetAtt"][0])


def _environment_ids(template_json: dict[str, Any]) -> dict[str, str]:
    """Compute environment logical ids by role: spot, on_demand, gpu (told apart by type and instance types)."""
    ids: dict[str, str] = {}
    for key, value in _resources(template_json, "AWS::Batch::ComputeEnvironment").items():
        resources = value["Properties"]["ComputeResources"]
        if resources["Type"] == "SPOT":
            ids["spot"] = key
        elif any(name.startswith("g") for name in resources.get("InstanceTypes", [])):
            ids["gpu"] = key
        else:
            ids["on_demand"] = key
    return ids


def _arn_of(environment_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [environment_id, "ComputeEnvironmentArn"]}


def _adapter_statements(template_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (policy,) = _resources(template_json, "AWS::IAM::ManagedPolicy").values()
    return {statement["Sid"]: statement for statement in policy["Properties"]["PolicyDocument"]["Statement"]}


# --- compute -----------------------------------------------------------------------------------------------------


def test_spot_environment_price_capacity_optimized_scales_to_zero(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "Type": "managed",
            "ComputeResources": Match.object_like(
                {"Type": "SPOT", "AllocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED", "MinvCpus": 0}
            ),
        },
    )


def test_every_environment_has_min_vcpus_zero_and_the_imdsv2_launch_template(template_json: dict[str, Any]) -> None:
    (launch_template_id,) = _resources(template_json, "AWS::EC2::LaunchTemplate")
    environments = _resources(template_json, "AWS::Batch::ComputeEnvironment")
    assert len(environments) == 3  # spot, on-demand, gpu
    for environment in environments.values():
        resources = environment["Properties"]["ComputeResources"]
        assert resources["MinvCpus"] == 0
        assert resources["LaunchTemplate"] == {"LaunchTemplateId": {"Ref": launch_template_id}}


def test_launch_template_requires_imdsv2(template: Template) -> None:
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {"LaunchTemplateData": Match.object_like({"MetadataOptions": Match.object_like({"HttpTokens": "required"})})},
    )


def test_default_queue_is_spot_then_on_demand(template: Template, template_json: dict[str, Any]) -> None:
    ids = _environment_ids(template_json)
    template.has_resource_properties(
        "AWS::Batch::JobQueue",
        {
            "ComputeEnvironmentOrder": [
                {"ComputeEnvironment": _arn_of(ids["spot"]), "Order": 1},
                {"ComputeEnvironment": _arn_of(ids["on_demand"]), "Order": 2},
            ]
        },
    )
    default_queue = template_json["Resources"][_queue_id(template_json, "JobQueueArn")]
    assert default_queue["Properties"]["ComputeEnvironmentOrder"][0]["ComputeEnvironment"] == _arn_of(ids["spot"])


def test_on_demand_and_gpu_queues_use_only_their_environment(template_json: dict[str, Any]) -> None:
    ids = _environment_ids(template_json)
    for output, role in ((StackOutput.ON_DEMAND_JOB_QUEUE_ARN, "on_demand"), (StackOutput.GPU_JOB_QUEUE_ARN, "gpu")):
        queue = template_json["Resources"][_queue_id(template_json, output)]
        assert queue["Properties"]["ComputeEnvironmentOrder"] == [
            {"ComputeEnvironment": _arn_of(ids[role]), "Order": 1}
        ]


def test_gpu_environment_uses_the_gpu_ami(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": Match.object_like({"Ec2Configuration": [{"ImageType": "ECS_AL2023_NVIDIA"}]})},
    )


def test_every_queue_cancels_jobs_stuck_in_runnable(template_json: dict[str, Any]) -> None:
    queues = _resources(template_json, "AWS::Batch::JobQueue")
    assert len(queues) == 3
    for queue in queues.values():
        actions = queue["Properties"]["JobStateTimeLimitActions"]
        assert actions, "every queue needs a RUNNABLE time limit"
        for action in actions:
            assert action["State"] == "RUNNABLE"
            assert action["Action"] == "CANCEL"
            assert action["MaxTimeSeconds"] == CONTEXT["runnable_timeout_seconds"]
            assert 600 <= action["MaxTimeSeconds"] <= 86_400


def test_security_group_has_no_ingress(template: Template) -> None:
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {"GroupDescription": Match.string_like_regexp("no ingress"), "SecurityGroupIngress": Match.absent()},
    )
    template.resource_count_is("AWS::EC2::SecurityGroupIngress", 0)


def test_new_vpc_has_private_subnets_nat_and_s3_gateway_endpoint(template: Template) -> None:
    template.resource_count_is("AWS::EC2::NatGateway", CONTEXT["nat_gateways"])
    template.has_resource_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "ServiceName": Match.object_like({"Fn::Join": Match.array_with([Match.array_with([".s3"])])}),
        },
    )


# --- job definition ----------------------------------------------------------------------------------------------


def test_job_definition_command_is_the_runner_command(template_json: dict[str, Any]) -> None:
    (job_definition,) = _resources(template_json, "AWS::Batch::JobDefinition").values()
    assert job_definition["Properties"]["ContainerProperties"]["Command"] == list(RUNNER_COMMAND)
    assert job_definition["Properties"]["Parameters"] == {"payload": "none"}


def test_job_definition_is_locked_down(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "Type": "container",
            "PlatformCapabilities": ["EC2"],
            "ContainerProperties": Match.object_like(
                {
                    "Privileged": False,
                    "ReadonlyRootFilesystem": True,
                    "MountPoints": [{"ContainerPath": "/tmp", "SourceVolume": "scratch"}],
                    "Volumes": [{"Name": "scratch", "Host": {}}],
                }
            ),
            "Timeout": {"AttemptDurationSeconds": CONTEXT["job_timeout_seconds"]},
        },
    )


def test_retry_strategy_retries_lost_spot_capacity_and_exits_on_anything_else(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "RetryStrategy": {
                "Attempts": CONTEXT["retry_attempts"],
                # CloudFormation spells the API's keys capitalised.
                "EvaluateOnExit": [
                    {key[0].upper() + key[1:]: value for key, value in rule.items()}
                    for rule in SPOT_RETRY_EVALUATE_ON_EXIT
                ],
            }
        },
    )


def test_job_logs_go_to_the_stack_log_group_with_retention(template: Template, template_json: dict[str, Any]) -> None:
    (log_group_id,) = _resources(template_json, "AWS::Logs::LogGroup")
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": CONTEXT["log_retention_days"]})
    template.has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "ContainerProperties": Match.object_like(
                {
                    "LogConfiguration": {
                        "LogDriver": "awslogs",
                        "Options": Match.object_like({"awslogs-group": {"Ref": log_group_id}}),
                    }
                }
            )
        },
    )
    assert template_json["Outputs"]["LogGroupName"]["Value"] == {"Ref": log_group_id}


def test_image_asset_builds_container_dockerfile_with_the_python_version(synthesized: pathlib.Path) -> None:
    outdir = synthesized
    assets = json.loads((outdir / f"{STACK_NAME}.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    source = image["source"]
    assert source["dockerFile"] == "container/Dockerfile"
    assert source["dockerBuildArgs"] == {"PYTHON_VERSION": CONTEXT["python_version"]}  # no requirements, no packages
    assert "dockerBuildContexts" not in source
    assert source["platform"] == "linux/amd64"
    staged = outdir / source["directory"]
    assert (staged / "container" / "Dockerfile").is_file()
    assert (staged / "pyproject.toml").is_file()
    assert (staged / "runtime" / "scaler_aws_batch" / "backends" / "base.py").is_file()
    # The root .dockerignore keeps the context (and the staging copy) small.
    for excluded in (".venv", "node_modules", "tests", ".git", "stacks", "cdk.out"):
        assert not (staged / excluded).exists(), f"{excluded} must not be in the image build context"


# --- bucket ------------------------------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_expires_task_objects(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Prefix": CONTEXT["payload_prefix"],
                                "ExpirationInDays": CONTEXT["payload_retention_days"],
                                "Status": "Enabled",
                            }
                        ),
                        Match.object_like(
                            {"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}, "Status": "Enabled"}
                        ),
                    ]
                )
            },
        },
    )


def test_bucket_policy_denies_requests_without_tls(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            )
        },
    )


def test_destroy_removal_policy_empties_and_deletes_the_bucket(template: Template) -> None:
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"})
    template.has_resource("AWS::Logs::LogGroup", {"DeletionPolicy": "Delete"})
    template.resource_count_is("Custom::S3AutoDeleteObjects", 1)


# --- IAM ---------------------------------------------------------------------------------------------------------


def test_adapter_can_submit_only_to_its_queues_with_its_job_definition(template_json: dict[str, Any]) -> None:
    statement = _adapter_statements(template_json)["SubmitToOwnQueuesWithOwnJobDefinition"]
    assert statement["Action"] == "batch:SubmitJob"
    (job_definition_id,) = _resources(template_json, "AWS::Batch::JobDefinition")
    queue_arns = [
        {"Fn::GetAtt": [_queue_id(template_json, output), "JobQueueArn"]}
        for output in (StackOutput.JOB_QUEUE_ARN, StackOutput.ON_DEMAND_JOB_QUEUE_ARN, StackOutput.GPU_JOB_QUEUE_ARN)
    ]
    resources = statement["Resource"]
    assert resources[:4] == [*queue_arns, {"Ref": job_definition_id}]
    # The fifth: the same job definition's ARN without ":revision", built from its name.
    assert len(resources) == 5
    unversioned = json.dumps(resources[4])
    assert ":job-definition/" in unversioned and job_definition_id in unversioned


def test_adapter_can_stop_only_jobs_carrying_the_adapter_tag(template: Template) -> None:
    template.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Action": ["batch:TerminateJob", "batch:CancelJob"],
                                    "Effect": "Allow",
                                    "Condition": {"StringLike": {f"aws:ResourceTag/{ADAPTER_TAG}": "*"}},
                                    "Resource": {"Fn::Join": ["", Match.array_with([":job/*"])]},
                                }
                            )
                        ]
                    )
                }
            )
        },
    )


def test_adapter_wildcard_resource_is_only_describe_and_list(template_json: dict[str, Any]) -> None:
    statements = _adapter_statements(template_json)
    assert statements["WatchJobs"]["Action"] == [
        "batch:DescribeJobs",
        "batch:ListJobs",
        "batch:DescribeJobDefinitions",
        "batch:DescribeComputeEnvironments",
    ]
    assert statements["WatchJobs"]["Resource"] == "*"
    assert statements["CheckQueuesAtStart"]["Action"] == ["batch:DescribeJobQueues", "ec2:DescribeInstanceTypes"]
    wildcard = [sid for sid, statement in statements.items() if statement["Resource"] == "*"]
    assert wildcard == ["WatchJobs", "CheckQueuesAtStart"]
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement


def test_adapter_tags_jobs_reads_logs_and_uses_the_prefix_only(template_json: dict[str, Any]) -> None:
    statements = _adapter_statements(template_json)
    (bucket_id,) = _resources(template_json, "AWS::S3::Bucket")
    (log_group_id,) = _resources(template_json, "AWS::Logs::LogGroup")
    tag = statements["TagOwnJobsAtSubmit"]
    assert tag["Action"] == "batch:TagResource"
    assert tag["Condition"] == {"ForAllValues:StringLike": {"aws:TagKeys": [f"{JobTag.PREFIX}*"]}}
    objects = statements["PayloadsAndResults"]
    # The adapter id's lease (leases/<id> under the prefix) is created, renewed, read and released with these.
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(objects["Action"])
    assert objects["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{CONTEXT['payload_prefix']}*"]]
    }
    assert statements["ListPayloadPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": [f"{CONTEXT['payload_prefix']}*"]}
    }
    assert statements["ReadStackOutputs"]["Action"] == "cloudformation:DescribeStacks"
    assert statements["ReadStackOutputs"]["Resource"] == {"Ref": "AWS::StackId"}
    logs = statements["ReadJobLogs"]
    assert logs["Action"] == "logs:GetLogEvents"
    assert {"Ref": log_group_id} in logs["Resource"]["Fn::Join"][1]


def test_job_role_reaches_only_the_payload_prefix_and_the_signing_secret(template_json: dict[str, Any]) -> None:
    (job_definition,) = _resources(template_json, "AWS::Batch::JobDefinition").values()
    job_role_id = job_definition["Properties"]["ContainerProperties"]["JobRoleArn"]["Fn::GetAtt"][0]
    (bucket_id,) = _resources(template_json, "AWS::S3::Bucket")
    (secret_id,) = _resources(template_json, "AWS::SecretsManager::Secret")
    policies = [
        policy
        for policy in _resources(template_json, "AWS::IAM::Policy").values()
        if {"Ref": job_role_id} in policy["Properties"]["Roles"]
    ]
    assert len(policies) == 1
    bucket_arn = {"Fn::GetAtt": [bucket_id, "Arn"]}
    prefix_arn = {"Fn::Join": ["", [bucket_arn, f"/{CONTEXT['payload_prefix']}*"]]}
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if resources == [{"Ref": secret_id}]:
            assert sorted(statement["Action"]) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
            continue
        assert all(resource in (bucket_arn, prefix_arn) for resource in resources), statement
        assert all(str(action).startswith("s3:") for action in statement["Action"]), statement
    assert any(statement["Resource"] == {"Ref": secret_id} for statement in statements), "the job reads its key"
    assert not any(
        {"Ref": job_role_id} in policy["Properties"].get("Roles", []) or job_role_id in json.dumps(policy)
        for policy in _resources(template_json, "AWS::IAM::ManagedPolicy").values()
    )


def test_signing_secret_is_generated_and_named_to_the_job_and_the_worker(template_json: dict[str, Any]) -> None:
    ((secret_id, secret),) = _resources(template_json, "AWS::SecretsManager::Secret").items()
    generator = secret["Properties"]["GenerateSecretString"]
    assert generator["PasswordLength"] >= 32 and generator["ExcludePunctuation"] is True
    assert "SecretString" not in secret["Properties"], "the key is generated by AWS, never written in the template"
    (job_definition,) = _resources(template_json, "AWS::Batch::JobDefinition").values()
    environment = job_definition["Properties"]["ContainerProperties"]["Environment"]
    assert {"Name": SIGNING_SECRET_ENV, "Value": {"Ref": secret_id}} in environment
    assert template_json["Outputs"]["SigningSecretArn"]["Value"] == {"Ref": secret_id}
    statements = _adapter_statements(template_json)
    assert statements["ReadSigningKey"]["Resource"] == {"Ref": secret_id}
    assert "secretsmanager:GetSecretValue" in statements["ReadSigningKey"]["Action"]
    readers = [
        resource_id
        for resource_id, resource in template_json["Resources"].items()
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and secret_id in json.dumps(resource)
    ]
    assert len(readers) == 2, "only the job role's policy and the adapter policy may read the key"


# --- outputs -----------------------------------------------------------------------------------------------------


def test_outputs_the_runtime_reads(template: Template, template_json: dict[str, Any]) -> None:
    assert set(template_json["Outputs"]) == EXPECTED_OUTPUTS
    template.has_output("PayloadPrefix", {"Value": CONTEXT["payload_prefix"]})
    template.has_output("PythonVersion", {"Value": CONTEXT["python_version"]})
    template.has_output("Architecture", {"Value": "x86_64"})
    template.has_output("Region", {"Value": {"Ref": "AWS::Region"}})
    template.has_output("AdapterPolicyArn", {"Export": {"Name": f"{STACK_NAME}-AdapterPolicyArn"}})
    (bucket_id,) = _resources(template_json, "AWS::S3::Bucket")
    (job_definition_id,) = _resources(template_json, "AWS::Batch::JobDefinition")
    template.has_output("BucketName", {"Value": {"Ref": bucket_id}})
    template.has_output("JobDefinitionArn", {"Value": {"Ref": job_definition_id}})


# --- gates: cdk-nag, cfn-lint, checkov ---------------------------------------------------------------------------


def test_cdk_nag_has_no_unacknowledged_finding(synthesized: pathlib.Path) -> None:
    outdir = synthesized  # the synth itself would have raised on an unacknowledged finding
    report = json.loads((outdir / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []
    for finding in plugin["suppressedViolations"]:
        assert len(finding.get("reason") or "") >= 60, f"{finding['ruleName']} needs a specific reason"
        assert finding["acknowledgedAt"] != STACK_NAME, f"{finding['ruleName']}: acknowledge on the construct"


def test_cdk_nag_gate_fails_synth_on_a_new_finding(tmp_path: pathlib.Path) -> None:
    from aws_cdk import aws_iam as iam

    from app import build_app

    app, stack = build_app(cdk_json_context(), outdir=str(tmp_path), env=NO_ENV)
    stack.job.job_role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*AwsSolutions-IAM5\[Resource::\*\]"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert [violation["ruleName"] for violation in plugin["violations"]] == ["AwsSolutions-IAM5[Resource::*]"]


def test_cfn_lint_is_clean(synthesized: pathlib.Path) -> None:
    unexpected, returncode, stderr = cfn_lint_unexpected(synthesized / f"{STACK_NAME}.template.json")
    assert unexpected == [], json.dumps(unexpected, indent=1)
    assert returncode in (0, 4), stderr  # 4: only the allowed warnings


def test_checkov_is_clean_with_justified_skips(synthesized: pathlib.Path) -> None:
    failed, returncode = checkov_failures(
        synthesized / f"{STACK_NAME}.template.json", "cloudformation", CHECKOV_TEMPLATE_SKIPS
    )
    assert failed == [], failed
    assert returncode == 0


# --- variants ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_demand_retain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    context = cdk_json_context(spot=False, gpu_queue=False, removal_policy="retain", stack_name="ScalerVariant")
    yield synth_to(tmp_path_factory.mktemp("variant"), context)


def test_spot_off_makes_an_on_demand_only_default_queue(on_demand_retain: dict[str, Any]) -> None:
    ids = _environment_ids(on_demand_retain)
    assert set(ids) == {"on_demand"}
    for output in ("JobQueueArn", "OnDemandJobQueueArn"):
        queue = on_demand_retain["Resources"][_queue_id(on_demand_retain, output)]
        assert queue["Properties"]["ComputeEnvironmentOrder"] == [
            {"ComputeEnvironment": _arn_of(ids["on_demand"]), "Order": 1}
        ]
    assert StackOutput.GPU_JOB_QUEUE_ARN not in on_demand_retain["Outputs"]
    assert set(on_demand_retain["Outputs"]) == EXPECTED_OUTPUTS - {StackOutput.GPU_JOB_QUEUE_ARN}


def test_retain_removal_policy_keeps_bucket_and_logs(on_demand_retain: dict[str, Any]) -> None:
    template = Template.from_json(on_demand_retain)
    template.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"})
    template.has_resource("AWS::Logs::LogGroup", {"DeletionPolicy": "Retain"})
    template.resource_count_is("Custom::S3AutoDeleteObjects", 0)
    template.has_output("AdapterPolicyArn", {"Export": {"Name": "ScalerVariant-AdapterPolicyArn"}})


def test_existing_vpc_is_looked_up_not_created(tmp_path_factory: pytest.TempPathFactory) -> None:
    from app import build_app

    context = cdk_json_context(vpc_id="vpc-0123456789abcdef0")
    app, stack = build_app(context, outdir=str(tmp_path_factory.mktemp("lookup")), env=TEST_ENV, nag=False)
    del app
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 0)  # the VPC keeps its own endpoints
    template.resource_count_is("AWS::Batch::ComputeEnvironment", 2)
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup", {"VpcId": Match.string_like_regexp("^vpc-"), "SecurityGroupIngress": Match.absent()}
    )
