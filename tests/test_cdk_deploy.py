"""Deploy test: the synthesized template is created in moto's CloudFormation (server mode, behind the Batch emulator),
its outputs configure ``scaler-batch worker``, and tasks submitted through Scaler run as Batch jobs on the stack's
queue and job definition. Then the stack is deleted.

What ``cdk deploy`` does around CreateStack is done here as the CDK CLI would: the bootstrap's SSM version parameter
is put in place and the file assets are published to the bootstrap bucket (:func:`cdk_bootstrap_and_publish`), and the
image asset is built from the same assembly by the shipped ``container/build_image.py`` and given the ECR name the job
definition uses (the push). Every job then runs in that image (the emulator's container execution), with the job
definition as the stack declares it. Without podman (a developer machine) the jobs run as processes instead and the
image checks skip; on CI podman is required.

Where moto's CloudFormation falls short, the template gets the test-only transformations in :data:`TRANSFORMATIONS`,
each a small function whose docstring gives the reason. The test checks that each one still changes the template and
that the stack still fails to create without it, so a transformation that became unneeded is noticed. The job
definition (its command and image) is never touched.

moto's CloudFormation also, without failing: skips ``AWS::S3::BucketPolicy`` (a warning), drops the job definition's
``Timeout`` and the bucket's lifecycle rules, and ignores the template's ``Rules``. On delete it has no handler for
several resource types; :data:`MOTO_DELETE_LEFTOVERS` lists them and the test asserts exactly those are left.
"""

from __future__ import annotations

import copy
import io
import json
import math
import pathlib
import zipfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import botocore.parsers
import pytest

from batch_emulator import BatchEmulator, EmulatorConfig
from cdk_support import NO_ENV, STACK_NAME, cdk_json_context, synth_to
from conftest import WAIT_SECONDS, scaler_with_adapter, wait_for
from harness import AWS_ENV
from job_image import build_from_assembly, image_tools_available, tag_as
from scaler_aws_batch.backends.base import RUNNER_COMMAND
from scaler_aws_batch.contracts import StackOutput
from scaler_aws_batch.job_parameter import InlineParameter, parse_parameter
from scaler_aws_batch.signing import KeyRing, generate_key
from scaler_aws_batch.wire import decode_payload

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

pytestmark = [
    pytest.mark.cdk,
    pytest.mark.e2e,
    # moto's known gaps, documented above and in MOTO_DELETE_LEFTOVERS; they are not this project's warnings.
    pytest.mark.filterwarnings("ignore:Tried to parse AWS..S3..BucketPolicy:UserWarning"),
    pytest.mark.filterwarnings("ignore:Exception.DependencyViolationError. with code DependencyViolation:UserWarning"),
]

#: The cdk.json context; cdk-nag is covered by tests/test_cdk_stack.py, so it is off here to keep synth short.
CONTEXT = cdk_json_context(nag=False)
EXPECTED_OUTPUTS = StackOutput.every() - {StackOutput.GPU_JOB_QUEUE_ARN, StackOutput.JOB_TAGS}
#: What ``cdk deploy`` asks for (the stack creates IAM roles and policies with generated names).
CAPABILITIES: list[Any] = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
#: A version ``cdk bootstrap`` writes today; the template's rule only refuses versions 1-5.
BOOTSTRAP_VERSION = "30"
#: The local name of the image built from this module's assembly.
IMAGE_TAG = "scaler-batch-runner:deploy-test"

Template = dict[str, Any]


# --- test-only transformations for moto's CloudFormation ---------------------------------------------------------


def _resources_of(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == resource_type}


def uppercase_compute_environment_type(template: Template) -> list[str]:
    """moto accepts only ``MANAGED``/``UNMANAGED`` for a compute environment's ``Type``; CloudFormation also takes the
    lowercase ``managed`` that CDK writes. Uppercasing it changes nothing on AWS."""
    changed: list[str] = []
    for key, resource in _resources_of(template, "AWS::Batch::ComputeEnvironment").items():
        value = resource["Properties"]["Type"]
        if value != value.upper():
            resource["Properties"]["Type"] = value.upper()
            changed.append(key)
    return changed


#: The role :func:`add_batch_service_role` adds (AWS uses its service-linked role instead).
SERVICE_ROLE_ID = "MotoOnlyBatchServiceRole"


def add_batch_service_role(template: Template) -> list[str]:
    """moto's CloudFormation reads ``ServiceRole`` of every compute environment unconditionally (a KeyError, HTTP 500,
    without it) and checks that the role exists. AWS uses the AWSServiceRoleForBatch service-linked role when it is
    omitted, which is what the stack relies on. Adds one role assumable by Batch and points every compute environment
    at it."""
    environments = _resources_of(template, "AWS::Batch::ComputeEnvironment")
    missing = [key for key, value in environments.items() if "ServiceRole" not in value["Properties"]]
    if missing:
        template["Resources"][SERVICE_ROLE_ID] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "batch.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            },
        }
        for key in missing:
            environments[key]["Properties"]["ServiceRole"] = {"Fn::GetAtt": [SERVICE_ROLE_ID, "Arn"]}
    return missing


#: Batch attributes moto cannot resolve with Fn::GetAtt; ``Ref`` gives the same ARN on AWS.
_BATCH_ARN_ATTRIBUTES = {"ComputeEnvironmentArn", "JobQueueArn"}


def ref_instead_of_batch_getatt(template: Template) -> list[str]:
    """moto's Batch models have no ``get_cfn_attribute``, so ``Fn::GetAtt [X, ComputeEnvironmentArn]`` (in the job
    queues) and ``Fn::GetAtt [X, JobQueueArn]`` (in the outputs) fail with HTTP 500. For these resource types
    CloudFormation's ``Ref`` returns the same ARN, so ``{"Ref": X}`` is equivalent on AWS."""
    changed: list[str] = []

    def rewrite(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            attribute = node.get("Fn::GetAtt")
            if len(node) == 1 and isinstance(attribute, list) and attribute[1] in _BATCH_ARN_ATTRIBUTES:
                changed.append(f"{where}: {attribute[0]}.{attribute[1]}")
                return {"Ref": attribute[0]}
            return {key: rewrite(value, where) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(value, where) for value in node]
        return node

    for section in ("Resources", "Outputs"):
        for key, value in template.get(section, {}).items():
            template[section][key] = rewrite(value, key)
    return changed


def drop_custom_resources(template: Template) -> list[str]:
    """moto runs a ``Custom::`` resource by invoking its Lambda function, which needs Docker; without it the stack
    stays CREATE_IN_PROGRESS for ever. The only one is CDK's ``Custom::S3AutoDeleteObjects``, which empties the bucket
    on stack delete; the test empties the bucket itself before deleting the stack (:func:`empty_bucket`). Its Lambda
    function and role stay in the template and are created."""
    dropped = [key for key, value in template["Resources"].items() if value["Type"].startswith("Custom::")]
    for key in dropped:
        del template["Resources"][key]
    for resource in template["Resources"].values():
        depends = resource.get("DependsOn")
        if isinstance(depends, list) and set(depends) & set(dropped):
            resource["DependsOn"] = [item for item in depends if item not in dropped]
    return dropped


#: The secret :func:`signing_secret_made_beforehand` stands in for; :func:`cdk_bootstrap_and_publish` creates it.
MOTO_SIGNING_SECRET_NAME = "MotoOnlySigningSecret"
#: Its partial ARN (no random suffix), which Secrets Manager accepts like the full one.
_SIGNING_SECRET_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
    + MOTO_SIGNING_SECRET_NAME
}


def signing_secret_made_beforehand(template: Template) -> list[str]:
    """moto's CloudFormation has no ``AWS::SecretsManager::Secret`` (it skips it, and the policies that name it fail
    with MalformedPolicyDocument). The test creates the secret with the Secrets Manager API instead, with a generated
    value like the stack's, and its (partial) ARN replaces every ``Ref`` to the secret, which is the ARN on AWS."""
    secrets = list(_resources_of(template, "AWS::SecretsManager::Secret"))
    if not secrets:
        return []
    for key in secrets:
        del template["Resources"][key]

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1 and node.get("Ref") in secrets:
                return _SIGNING_SECRET_ARN
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        return node

    for section in ("Resources", "Outputs"):
        template[section] = rewrite(template.get(section, {}))
    return secrets


Transformation = Callable[[Template], list[str]]
#: Every test-only change to the synthesized template, in the order applied. Each one's docstring is its reason.
TRANSFORMATIONS: list[Transformation] = [
    uppercase_compute_environment_type,
    add_batch_service_role,
    ref_instead_of_batch_getatt,
    drop_custom_resources,
    signing_secret_made_beforehand,
]


def transform_for_moto(template: Template, skip: Transformation | None = None) -> tuple[Template, dict[str, list[str]]]:
    """A copy of ``template`` with :data:`TRANSFORMATIONS` applied (but ``skip``), and what each one changed."""
    result = copy.deepcopy(template)
    applied: dict[str, list[str]] = {}
    for transformation in TRANSFORMATIONS:
        if transformation is skip:
            continue
        changed = transformation(result)
        if changed:
            applied[transformation.__name__] = changed
    return result, applied


# --- what `cdk bootstrap` and `cdk deploy` do around CreateStack -------------------------------------------------


def _substitute(text: str, emulator: BatchEmulator) -> str:
    return (
        text.replace("${AWS::AccountId}", emulator.config.account_id)
        .replace("${AWS::Region}", emulator.region)
        .replace("${AWS::Partition}", "aws")
    )


def cdk_bootstrap_and_publish(emulator: BatchEmulator, template: Template, assembly: pathlib.Path) -> None:
    """Put in moto what the CDK CLI provides before CreateStack: the bootstrap version SSM parameter (the template's
    ``BootstrapVersion`` parameter resolves it) and the file assets in the bootstrap bucket (the custom resource
    provider's Lambda code). Docker image assets are not built: the emulator ignores the job image."""
    parameter = template["Parameters"]["BootstrapVersion"]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    emulator.client("ssm").put_parameter(Name=parameter["Default"], Value=BOOTSTRAP_VERSION, Type="String")
    emulator.client("secretsmanager").create_secret(Name=MOTO_SIGNING_SECRET_NAME, SecretString=generate_key())

    s3 = emulator.client("s3")
    manifest = json.loads((assembly / f"{STACK_NAME}.assets.json").read_text())
    for asset in manifest.get("files", {}).values():
        source = assembly / asset["source"]["path"]
        if asset["source"]["packaging"] == "zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(source.rglob("*")):
                    archive.write(path, path.relative_to(source))
            body = buffer.getvalue()
        else:
            body = source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = _substitute(destination["bucketName"], emulator)
            if bucket not in {item["Name"] for item in s3.list_buckets().get("Buckets", [])}:
                s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=_substitute(destination["objectKey"], emulator), Body=body)


def empty_bucket(emulator: BatchEmulator, bucket: str) -> None:
    """What CDK's dropped ``Custom::S3AutoDeleteObjects`` does on stack delete (moto keeps a non-empty bucket)."""
    s3 = emulator.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]


def create_stack(cloudformation: CloudFormationClient, name: str, template: Template) -> str:
    """CreateStack, then wait (with a deadline) until it leaves CREATE_IN_PROGRESS; returns the final status."""
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template), Capabilities=CAPABILITIES)
    status = ""

    def settled() -> bool:
        nonlocal status
        status = cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        return status != "CREATE_IN_PROGRESS"

    wait_for(settled, f"stack {name} to leave CREATE_IN_PROGRESS", timeout=60, interval=0.2)
    return status


def stack_outputs(cloudformation: CloudFormationClient, name: str) -> dict[str, str]:
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


# --- what moto tracks, for the delete check ----------------------------------------------------------------------


def tracked(emulator: BatchEmulator) -> dict[str, set[str]]:
    """Identifiers of everything moto holds that the stack can create, by CloudFormation resource type."""
    batch, s3, logs = emulator.client("batch"), emulator.client("s3"), emulator.client("logs")
    iam, ec2, lam = emulator.client("iam"), emulator.client("ec2"), emulator.client("lambda")
    vpcs = {vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"] if not vpc.get("IsDefault")}
    in_vpcs = [{"Name": "vpc-id", "Values": sorted(vpcs)}] if vpcs else None

    def ec2_ids(call: Callable[..., Any], key: str, id_key: str, in_stack_vpcs: bool = False) -> set[str]:
        if in_stack_vpcs and in_vpcs is None:
            return set()
        items = call(Filters=in_vpcs)[key] if in_stack_vpcs else call()[key]
        return {item[id_key] for item in items}

    return {
        "AWS::Batch::ComputeEnvironment": {
            env["computeEnvironmentArn"] for env in batch.describe_compute_environments()["computeEnvironments"]
        },
        "AWS::Batch::JobQueue": {queue["jobQueueArn"] for queue in batch.describe_job_queues()["jobQueues"]},
        "AWS::Batch::JobDefinition": {
            item["jobDefinitionArn"]
            for item in batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]
            if item.get("status") == "ACTIVE"
        },
        "AWS::S3::Bucket": {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])},
        "AWS::Logs::LogGroup": {group["logGroupName"] for group in logs.describe_log_groups()["logGroups"]},
        "AWS::IAM::Role": {role["RoleName"] for role in iam.list_roles()["Roles"]},
        "AWS::IAM::InstanceProfile": {
            item["InstanceProfileName"] for item in iam.list_instance_profiles()["InstanceProfiles"]
        },
        "AWS::IAM::ManagedPolicy": {policy["Arn"] for policy in iam.list_policies(Scope="Local")["Policies"]},
        "AWS::Lambda::Function": {function["FunctionName"] for function in lam.list_functions()["Functions"]},
        "AWS::EC2::VPC": vpcs,
        "AWS::EC2::Subnet": ec2_ids(ec2.describe_subnets, "Subnets", "SubnetId", True),
        "AWS::EC2::RouteTable": ec2_ids(ec2.describe_route_tables, "RouteTables", "RouteTableId", True),
        "AWS::EC2::SecurityGroup": {
            group["GroupId"]
            for group in ec2.describe_security_groups(Filters=in_vpcs)["SecurityGroups"]
            if group["GroupName"] != "default"
        }
        if in_vpcs
        else set(),
        "AWS::EC2::NatGateway": {
            gateway["NatGatewayId"]
            for gateway in ec2.describe_nat_gateways()["NatGateways"]
            if gateway.get("State") != "deleted"
        },
        "AWS::EC2::InternetGateway": ec2_ids(
            ec2.describe_internet_gateways, "InternetGateways", "InternetGatewayId", False
        ),
        "AWS::EC2::EIP": ec2_ids(ec2.describe_addresses, "Addresses", "PublicIp"),
        "AWS::EC2::VPCEndpoint": ec2_ids(ec2.describe_vpc_endpoints, "VpcEndpoints", "VpcEndpointId"),
        "AWS::EC2::LaunchTemplate": ec2_ids(
            ec2.describe_launch_templates, "LaunchTemplates", "LaunchTemplateId", False
        ),
        "Export": {export["Name"] for export in emulator.client("cloudformation").list_exports()["Exports"]},
    }


def _difference(after: dict[str, set[str]], before: dict[str, set[str]]) -> dict[str, set[str]]:
    return {kind: after[kind] - before[kind] for kind in after if after[kind] - before[kind]}


#: What moto (5.2.x) leaves behind after DeleteStack, each with the reason; on AWS the stack deletes all of it.
MOTO_DELETE_LEFTOVERS = {
    "AWS::Batch::ComputeEnvironment": "moto's Batch models have no CloudFormation delete handler",
    "AWS::Batch::JobQueue": "moto's Batch models have no CloudFormation delete handler",
    "AWS::Batch::JobDefinition": "moto's Batch models have no CloudFormation delete handler (stays ACTIVE)",
    "AWS::EC2::RouteTable": "moto has no CloudFormation delete handler for route tables, routes or associations",
    "AWS::EC2::VPC": "moto refuses to delete a VPC that still has non-main route tables (see RouteTable); this is"
    " the DependencyViolation that DeleteStack raises",
    "AWS::EC2::NatGateway": "moto has no CloudFormation delete handler for NAT gateways",
    "AWS::EC2::InternetGateway": "moto has no CloudFormation delete handler for internet gateways",
    "AWS::EC2::EIP": "moto has no CloudFormation delete handler for Elastic IPs",
    "AWS::EC2::VPCEndpoint": "moto has no CloudFormation delete handler for VPC endpoints",
    "AWS::IAM::ManagedPolicy": "moto has no CloudFormation delete handler for customer-managed policies",
    "Export": "moto removes a stack's exports only after every resource was deleted, and the VPC was not",
}


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Template]:
    """The cloud assembly directory and the synthesized template (as ``cdk synth`` makes them, no environment)."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    return outdir, synth_to(outdir, CONTEXT, env=NO_ENV)


@pytest.fixture(scope="module")
def template(assembly: tuple[pathlib.Path, Template]) -> Template:
    return assembly[1]


@pytest.fixture(scope="module")
def image(assembly: tuple[pathlib.Path, Template]) -> str | None:
    """The job image built from this assembly's asset, or None where podman is missing (not on CI)."""
    if not image_tools_available():
        return None
    return str(build_from_assembly(assembly[0], IMAGE_TAG)["tag"])


@pytest.fixture(scope="module")
def emulator(assembly: tuple[pathlib.Path, Template], image: str | None) -> Iterator[BatchEmulator]:
    outdir, template = assembly
    # Several jobs at once so a small map finishes quickly; each in the image when there is one.
    config = EmulatorConfig(max_running_jobs=8, execution="container" if image else "process")
    with BatchEmulator(config) as emu:
        cdk_bootstrap_and_publish(emu, template, outdir)
        yield emu


@pytest.fixture(scope="module")
def baseline(emulator: BatchEmulator) -> dict[str, set[str]]:
    """What moto holds before the stack exists (the bootstrap bucket, moto's default VPC and so on)."""
    return tracked(emulator)


@pytest.fixture(scope="module")
def deployed(emulator: BatchEmulator, template: Template, baseline: dict[str, set[str]]) -> dict[str, str]:
    """The stack, created in moto's CloudFormation from the transformed template; returns its outputs."""
    transformed, _ = transform_for_moto(template)
    status = create_stack(emulator.client("cloudformation"), STACK_NAME, transformed)
    assert status == "CREATE_COMPLETE"
    outputs = stack_outputs(emulator.client("cloudformation"), STACK_NAME)
    if emulator.config.execution == "container":
        batch = emulator.client("batch")
        (definition,) = batch.describe_job_definitions(jobDefinitions=[outputs["JobDefinitionArn"]])["jobDefinitions"]
        tag_as(IMAGE_TAG, definition["containerProperties"]["image"])  # what `cdk deploy` pushes to ECR
    return outputs


# --- tests -------------------------------------------------------------------------------------------------------


def test_every_transformation_applies_and_the_job_definition_is_untouched(template: Template) -> None:
    transformed, applied = transform_for_moto(template)
    assert list(applied) == [transformation.__name__ for transformation in TRANSFORMATIONS]
    for transformation in TRANSFORMATIONS:
        assert transformation.__doc__, f"{transformation.__name__} needs a docstring giving its reason"
    assert applied["drop_custom_resources"] == list(_resources_of(template, "Custom::S3AutoDeleteObjects"))

    (job_id,) = _resources_of(template, "AWS::Batch::JobDefinition")
    (secret_id,) = applied["signing_secret_made_beforehand"]
    # Untouched but for the secret's name in its environment.
    original = json.dumps(template["Resources"][job_id]).replace(
        json.dumps({"Ref": secret_id}), json.dumps(_SIGNING_SECRET_ARN)
    )
    assert transformed["Resources"][job_id] == json.loads(original)
    container = transformed["Resources"][job_id]["Properties"]["ContainerProperties"]
    assert container["Command"] == ["scaler-batch", "run-job", "--payload", "Ref::payload"] == list(RUNNER_COMMAND)
    assert "Fn::Sub" in container["Image"]  # the CDK image asset, left as synthesized
    # Nothing else is removed or renamed: only the added service role is new.
    dropped = {*applied["drop_custom_resources"], *applied["signing_secret_made_beforehand"]}
    assert set(transformed["Resources"]) == set(template["Resources"]) - dropped | {SERVICE_ROLE_ID}
    assert set(transformed["Outputs"]) == set(template["Outputs"]) == EXPECTED_OUTPUTS


def test_stack_creates_every_resource_in_moto(emulator: BatchEmulator, deployed: dict[str, str]) -> None:
    assert set(deployed) == EXPECTED_OUTPUTS
    assert deployed["Region"] == emulator.region
    assert deployed["PayloadPrefix"] == "scaler-batch/"

    batch = emulator.client("batch")
    queue_arns = [deployed["JobQueueArn"], deployed["OnDemandJobQueueArn"]]
    queues = {queue["jobQueueArn"]: queue for queue in batch.describe_job_queues(jobQueues=queue_arns)["jobQueues"]}
    assert set(queues) == set(queue_arns)
    assert all(queue["state"] == "ENABLED" for queue in queues.values())
    environment_arns = [
        item["computeEnvironment"]
        for item in sorted(queues[deployed["JobQueueArn"]]["computeEnvironmentOrder"], key=lambda item: item["order"])
    ]
    environments = {
        env["computeEnvironmentArn"]: env
        for env in batch.describe_compute_environments(computeEnvironments=environment_arns)["computeEnvironments"]
    }
    # The default queue: Spot first, then On-Demand, both managed and scaled to zero.
    assert [environments[arn]["computeResources"]["type"] for arn in environment_arns] == ["SPOT", "EC2"]
    assert all(env["type"] == "MANAGED" for env in environments.values())
    assert all(env["computeResources"]["minvCpus"] == 0 for env in environments.values())

    (definition,) = batch.describe_job_definitions(jobDefinitions=[deployed["JobDefinitionArn"]])["jobDefinitions"]
    assert definition["status"] == "ACTIVE"
    assert definition["containerProperties"]["command"] == list(RUNNER_COMMAND)
    assert definition["parameters"] == {"payload": "none"}
    assert definition["containerProperties"]["logConfiguration"]["options"]["awslogs-group"] == deployed["LogGroupName"]

    emulator.client("s3").head_bucket(Bucket=deployed["BucketName"])
    groups = emulator.client("logs").describe_log_groups(logGroupNamePrefix=deployed["LogGroupName"])["logGroups"]
    assert [group["logGroupName"] for group in groups] == [deployed["LogGroupName"]]
    assert groups[0].get("retentionInDays") == 30
    emulator.client("iam").get_policy(PolicyArn=deployed["AdapterPolicyArn"])


def _stack_jobs(emulator: BatchEmulator, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Every job on ``queues``, described, by id."""
    batch = emulator.client("batch")
    ids: list[str] = []
    for queue in queues:
        for page in batch.get_paginator("list_jobs").paginate(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["*"]}]
        ):
            ids.extend(summary["jobId"] for summary in page["jobSummaryList"])
    jobs: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        for job in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]:
            jobs[job["jobId"]] = dict(job)
    return jobs


def _run_tasks_through_stack(
    emulator: BatchEmulator, deployed: dict[str, str], work_dir: pathlib.Path, config_args: list[str]
) -> None:
    """Start the worker with only ``config_args`` (stack settings) plus endpoint and region, run tasks through
    Scaler, and check they ran as Batch jobs on the stack's queue and job definition."""
    queues = [deployed["JobQueueArn"], deployed["OnDemandJobQueueArn"]]
    before = set(_stack_jobs(emulator, queues))
    emulator.reset_api_calls()
    args = [
        "--backend",
        "aws-batch",
        *config_args,
        "--endpoint-url",
        emulator.endpoint_url,
        "--region",
        emulator.region,
    ]
    with scaler_with_adapter(work_dir, args, env=AWS_ENV) as (client, adapter):
        assert client.submit(math.sqrt, 16).result(timeout=WAIT_SECONDS) == 4.0
        assert client.map(math.pow, [2, 3, 4], [2, 2, 2]) == [4.0, 9.0, 16.0]
        log = adapter.log_text()
    assert emulator.api_calls["SubmitJob"] >= 1, log
    new_jobs = {job_id: job for job_id, job in _stack_jobs(emulator, queues).items() if job_id not in before}
    assert new_jobs, log
    assert {job["jobQueue"] for job in new_jobs.values()} == {deployed["JobQueueArn"]}
    assert {job["jobDefinition"] for job in new_jobs.values()} == {deployed["JobDefinitionArn"]}
    # A result is read as soon as it is stored; the job's container still has to exit (an array parent ends after
    # its last child).
    wait_for(
        lambda: (
            {job["status"] for job in _stack_jobs(emulator, queues).values() if job["jobId"] in new_jobs}
            == {"SUCCEEDED"}
        ),
        "every job of the stack to succeed",
    )
    # The probe, the sqrt and three map tasks: one job each, or fewer jobs if the adapter batched them into arrays.
    assert sum(job.get("arrayProperties", {}).get("size", 1) for job in new_jobs.values()) >= 5
    # Results go to the stack's bucket under its payload prefix (the store named in each inline payload).
    for job in new_jobs.values():
        parameter = parse_parameter(job["parameters"]["payload"])
        assert isinstance(parameter, InlineParameter), "small tasks travel inline"
        key_text = emulator.client("secretsmanager").get_secret_value(SecretId=deployed["SigningSecretArn"])
        keys = KeyRing.parse(key_text["SecretString"], source="the stack's signing secret")
        assert decode_payload(parameter.envelope, keys).result_store == f"s3://{deployed['BucketName']}/scaler-batch"
    # The job log went to the stack's log group, as the job definition's log configuration says.
    streams = emulator.client("logs").describe_log_streams(logGroupName=deployed["LogGroupName"])["logStreams"]
    assert streams


def test_worker_reads_the_stack_outputs_from_cloudformation(
    emulator: BatchEmulator, deployed: dict[str, str], tmp_path: pathlib.Path
) -> None:
    _run_tasks_through_stack(emulator, deployed, tmp_path, ["--stack", STACK_NAME])


def test_worker_reads_a_cdk_outputs_file(
    emulator: BatchEmulator, deployed: dict[str, str], tmp_path: pathlib.Path
) -> None:
    outputs_file = tmp_path / "cdk-outputs.json"  # what `cdk deploy --outputs-file` writes
    outputs_file.write_text(json.dumps({STACK_NAME: stack_outputs(emulator.client("cloudformation"), STACK_NAME)}))
    _run_tasks_through_stack(emulator, deployed, tmp_path / "worker", ["--stack-outputs", str(outputs_file)])


def test_delete_stack_leaves_only_what_moto_cannot_delete(
    emulator: BatchEmulator, deployed: dict[str, str], baseline: dict[str, set[str]]
) -> None:
    cloudformation = emulator.client("cloudformation", max_attempts=1)
    created = _difference(tracked(emulator), baseline)
    assert set(MOTO_DELETE_LEFTOVERS) <= set(created)

    empty_bucket(emulator, deployed["BucketName"])
    # moto deletes what it can, then raises the VPC's DependencyViolation (see MOTO_DELETE_LEFTOVERS); on AWS the
    # stack goes to DELETE_COMPLETE. If moto learns to delete these resources, this raises no more: update the list.
    with pytest.raises(botocore.exceptions.ClientError, match="DependencyViolation"):
        cloudformation.delete_stack(StackName=STACK_NAME)
    with pytest.raises(botocore.exceptions.ClientError, match="does not exist"):
        cloudformation.describe_stacks(StackName=STACK_NAME)

    left = _difference(tracked(emulator), baseline)
    assert set(left) == set(MOTO_DELETE_LEFTOVERS), {kind: sorted(ids) for kind, ids in left.items()}
    for kind, ids in left.items():
        assert ids <= created[kind], kind  # nothing new appeared; leftovers are the stack's own resources
    # Everything else the stack created is gone.
    assert set(created) - set(left) == {
        "AWS::S3::Bucket",
        "AWS::Logs::LogGroup",
        "AWS::IAM::Role",
        "AWS::IAM::InstanceProfile",
        "AWS::Lambda::Function",
        "AWS::EC2::Subnet",
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::LaunchTemplate",
    }


@pytest.mark.parametrize("transformation", TRANSFORMATIONS, ids=lambda item: item.__name__)
def test_each_transformation_is_still_needed(
    emulator: BatchEmulator, template: Template, transformation: Transformation
) -> None:
    """Without the transformation, moto does not create the stack. Runs after the delete test (file order), on
    separate stack names; the export is renamed so that it cannot collide with the leftover one."""
    transformed, applied = transform_for_moto(template, skip=transformation)
    assert transformation.__name__ not in applied
    for output in transformed["Outputs"].values():
        if "Export" in output:
            output["Export"] = {"Name": f"Probe-{transformation.__name__}-{output['Export']['Name']}"}
    name = f"Probe-{transformation.__name__.replace('_', '-')}"
    cloudformation = emulator.client("cloudformation", max_attempts=1)
    try:
        cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(transformed), Capabilities=CAPABILITIES)
    except (botocore.exceptions.ClientError, botocore.parsers.ResponseParserError):
        return  # moto refused the template (HTTP 4xx/5xx)
    # moto creates every resource within CreateStack, except Custom:: ones, which wait for their Lambda's response.
    status = cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
    assert status != "CREATE_COMPLETE", f"{transformation.__name__} is no longer needed: remove it"
