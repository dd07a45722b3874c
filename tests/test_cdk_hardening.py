"""The hardened stack variant: secrets by reference, isolated subnets with VPC endpoints (no NAT), warm starts and
user job tags. One synthesis (cdk-nag gate on) holds every option; the default stack is checked for their absence.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest

from cdk_support import (
    CHECKOV_TEMPLATE_SKIPS,
    NO_ENV,
    REPO,
    STACK_NAME,
    cdk_json_context,
    cfn_lint_unexpected,
    checkov_failures,
    synth_to,
)
from scaler_aws_batch.contracts import JobTag, StackOutput
from test_cdk_cli import CDK_BIN, _offline_env

pytestmark = pytest.mark.cdk

from aws_cdk.assertions import Template  # noqa: E402  (after cdk_support, which quiets jsii's banner)

DB_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
API_PARAMETER = "arn:aws:ssm:us-east-1:123456789012:parameter/scaler/api-token"
SECRETS = {"DB_PASSWORD": f"{DB_SECRET}:password::", "API_TOKEN": API_PARAMETER}
JOB_TAGS = {"team": "research", "cost-center": "cc-42"}
CONTEXT = cdk_json_context(
    nat_gateways=0,
    job_secrets=SECRETS,
    min_vcpus=4,
    image_pull_behavior="prefer-cached",
    job_tags=JOB_TAGS,
    worker_tag_keys=["project", "run-*"],
)
#: The interface endpoints' service suffixes (``com.amazonaws.<region>.<suffix>``) an isolated VPC must have.
INTERFACE_SERVICES = {"ecr.api", "ecr.dkr", "ecs", "ecs-agent", "ecs-telemetry", "logs", "sts", "secretsmanager"}
#: ... plus SSM when a job secret is a Parameter Store parameter (the ECS agent reads it through SSM).


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("hardened")


@pytest.fixture(scope="module")
def hardened(outdir: pathlib.Path) -> dict[str, Any]:
    return synth_to(outdir, CONTEXT, env=NO_ENV)


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synth_to(tmp_path_factory.mktemp("default"), cdk_json_context(), env=NO_ENV)


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == resource_type}


def _role_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every inline policy statement, by the logical id of the role it is attached to."""
    statements: dict[str, list[dict[str, Any]]] = {}
    for policy in _resources(template, "AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            statements.setdefault(role["Ref"], []).extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _execution_role_id(template: dict[str, Any]) -> str:
    (job_definition,) = _resources(template, "AWS::Batch::JobDefinition").values()
    return str(job_definition["Properties"]["ContainerProperties"]["ExecutionRoleArn"]["Fn::GetAtt"][0])


def _endpoint_service(endpoint: dict[str, Any]) -> str:
    """``ecr.api`` from ``com.amazonaws.<region>.ecr.api`` (CDK joins the region in as a reference)."""
    name = endpoint["Properties"]["ServiceName"]
    if isinstance(name, str):
        return name.split(".", 3)[-1]
    parts = name["Fn::Join"][1]
    return str(parts[-1]).lstrip(".")


# --- secrets by reference ----------------------------------------------------------------------------------------


def test_job_definition_injects_each_secret_by_reference(hardened: dict[str, Any]) -> None:
    (job_definition,) = _resources(hardened, "AWS::Batch::JobDefinition").values()
    container = job_definition["Properties"]["ContainerProperties"]
    assert sorted(container["Secrets"], key=lambda entry: entry["Name"]) == [
        {"Name": "API_TOKEN", "ValueFrom": API_PARAMETER},
        {"Name": "DB_PASSWORD", "ValueFrom": f"{DB_SECRET}:password::"},
    ]
    environment = {entry["Name"] for entry in container.get("Environment", [])}
    assert not environment & set(SECRETS), "a secret must not also travel as a plain environment variable"


def test_execution_role_reads_exactly_the_referenced_arns(hardened: dict[str, Any]) -> None:
    statements = _role_statements(hardened)
    execution = statements[_execution_role_id(hardened)]
    secret_reads = [s for s in execution if any(a.startswith(("secretsmanager:", "ssm:")) for a in _actions(s))]
    assert sorted((tuple(_actions(s)), json.dumps(s["Resource"])) for s in secret_reads) == [
        (("secretsmanager:GetSecretValue",), json.dumps(DB_SECRET)),  # the secret, without the JSON-key selector
        (("ssm:GetParameters",), json.dumps(API_PARAMETER)),
    ]
    for statement in secret_reads:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
    # No other role (the job's own, the instances') may read them, neither by name nor through a wildcard. (The job
    # role does read the stack's own signing secret, which is a different resource.)
    for role_id, role_statements in statements.items():
        if role_id == _execution_role_id(hardened):
            continue
        for statement in role_statements:
            if not any(a.startswith(("secretsmanager:", "ssm:")) for a in _actions(statement)):
                continue
            resources = json.dumps(statement["Resource"])
            assert DB_SECRET not in resources and API_PARAMETER not in resources and resources != '"*"', role_id


def test_secret_arns_stay_out_of_outputs(hardened: dict[str, Any]) -> None:
    outputs = json.dumps(hardened["Outputs"])
    assert DB_SECRET not in outputs and API_PARAMETER not in outputs


def test_default_stack_has_no_secrets_and_no_secret_grant(default: dict[str, Any]) -> None:
    (job_definition,) = _resources(default, "AWS::Batch::JobDefinition").values()
    assert "Secrets" not in job_definition["Properties"]["ContainerProperties"]
    execution = _role_statements(default)[_execution_role_id(default)]
    assert not any(a.startswith(("secretsmanager:", "ssm:")) for s in execution for a in _actions(s))


def test_a_secret_value_pasted_by_mistake_is_not_echoed() -> None:
    from stacks.config import StackConfig

    pasted = "hunter2-correct-horse-battery"
    with pytest.raises(ValueError, match=r"'job_secrets'.*ARN") as caught:
        StackConfig.from_context({"job_secrets": {"DB_PASSWORD": pasted}}.get)
    assert pasted not in str(caught.value)


# --- private networking without NAT ------------------------------------------------------------------------------


def test_no_nat_gateway_no_internet_gateway_no_public_subnet(hardened: dict[str, Any]) -> None:
    template = Template.from_json(hardened)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::EIP", 0)
    for subnet in _resources(hardened, "AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    routes = _resources(hardened, "AWS::EC2::Route")
    assert routes == {}, "isolated subnets have no route out of the VPC"


def test_isolated_vpc_has_every_endpoint_jobs_and_instances_need(hardened: dict[str, Any]) -> None:
    endpoints = _resources(hardened, "AWS::EC2::VPCEndpoint").values()
    interface = [e for e in endpoints if e["Properties"]["VpcEndpointType"] == "Interface"]
    gateway = [e for e in endpoints if e["Properties"].get("VpcEndpointType", "Gateway") == "Gateway"]
    assert {_endpoint_service(e) for e in interface} == INTERFACE_SERVICES | {"ssm"}
    assert len(interface) == len(INTERFACE_SERVICES) + 1
    assert [_endpoint_service(e) for e in gateway] == ["s3"]
    subnet_ids = {json.dumps({"Ref": key}) for key in _resources(hardened, "AWS::EC2::Subnet")}
    for endpoint in interface:
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True
        assert {json.dumps(s) for s in endpoint["Properties"]["SubnetIds"]} == subnet_ids


def test_endpoints_admit_https_from_the_job_instances_only(hardened: dict[str, Any]) -> None:
    groups = _resources(hardened, "AWS::EC2::SecurityGroup")
    job_group = next(key for key, value in groups.items() if "no ingress" in value["Properties"]["GroupDescription"])
    endpoint_group = next(key for key in groups if key != job_group)
    assert "SecurityGroupIngress" not in groups[job_group]["Properties"]
    assert "SecurityGroupIngress" not in groups[endpoint_group]["Properties"]  # no CIDR rule: only the one below
    (rule,) = _resources(hardened, "AWS::EC2::SecurityGroupIngress").values()
    assert rule["Properties"]["GroupId"] == {"Fn::GetAtt": [endpoint_group, "GroupId"]}
    assert rule["Properties"]["SourceSecurityGroupId"] == {"Fn::GetAtt": [job_group, "GroupId"]}
    assert (rule["Properties"]["FromPort"], rule["Properties"]["ToPort"]) == (443, 443)
    for endpoint in _resources(hardened, "AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"]["VpcEndpointType"] == "Interface":
            assert endpoint["Properties"]["SecurityGroupIds"] == [{"Fn::GetAtt": [endpoint_group, "GroupId"]}]


def test_compute_environments_run_in_the_isolated_subnets(hardened: dict[str, Any]) -> None:
    subnets = sorted(json.dumps({"Ref": key}) for key in _resources(hardened, "AWS::EC2::Subnet"))
    for environment in _resources(hardened, "AWS::Batch::ComputeEnvironment").values():
        assert sorted(json.dumps(s) for s in environment["Properties"]["ComputeResources"]["Subnets"]) == subnets


def test_hardened_variant_passes_cdk_nag(outdir: pathlib.Path, hardened: dict[str, Any]) -> None:
    assert hardened  # the synthesis itself raises on an unacknowledged finding
    report = json.loads((outdir / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert plugin["conclusion"] == "success" and plugin["violations"] == []


def test_hardened_variant_passes_cfn_lint(outdir: pathlib.Path, hardened: dict[str, Any]) -> None:
    assert hardened
    unexpected, returncode, stderr = cfn_lint_unexpected(outdir / f"{STACK_NAME}.template.json")
    assert unexpected == [], json.dumps(unexpected, indent=1)
    assert returncode in (0, 4), stderr  # 4: only the allowed warnings


def test_hardened_variant_passes_checkov(outdir: pathlib.Path, hardened: dict[str, Any]) -> None:
    assert hardened
    failed, returncode = checkov_failures(
        outdir / f"{STACK_NAME}.template.json", "cloudformation", CHECKOV_TEMPLATE_SKIPS
    )
    assert failed == [], failed
    assert returncode == 0


@pytest.mark.skipif(not CDK_BIN.exists(), reason="the CDK CLI is not installed: run `npm ci` (make test does)")
def test_cdk_cli_synth_without_nat_works_offline(tmp_path: pathlib.Path) -> None:
    outdir = tmp_path / "cdk.out"
    result = subprocess.run(
        [str(CDK_BIN), "synth", "-c", "nat_gateways=0", "--output", str(outdir), "--ci", "--no-notices",
         "--no-version-reporting", "--quiet"],
        cwd=REPO,
        env=_offline_env(),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = json.loads((outdir / f"{STACK_NAME}.template.json").read_text())
    types = [resource["Type"] for resource in template["Resources"].values()]
    assert "AWS::EC2::NatGateway" not in types and "AWS::EC2::InternetGateway" not in types
    assert types.count("AWS::EC2::VPCEndpoint") == len(INTERFACE_SERVICES) + 1
    assert not (REPO / "cdk.context.json").exists(), "the NAT-less app needs no context lookups"


# --- warm starts -------------------------------------------------------------------------------------------------


def test_min_vcpus_keeps_only_the_default_queues_first_environment_warm(hardened: dict[str, Any]) -> None:
    minimums = {
        value["Properties"]["ComputeResources"]["Type"]: value["Properties"]["ComputeResources"]["MinvCpus"]
        for value in _resources(hardened, "AWS::Batch::ComputeEnvironment").values()
    }
    assert minimums == {"SPOT": CONTEXT["min_vcpus"], "EC2": 0}


def test_on_demand_only_stack_keeps_the_on_demand_environment_warm(tmp_path: pathlib.Path) -> None:
    from app import build_app

    _, stack = build_app(cdk_json_context(spot=False, min_vcpus=2), outdir=str(tmp_path), env=NO_ENV, nag=False)
    template = dict(Template.from_stack(stack).to_json())
    (environment,) = _resources(template, "AWS::Batch::ComputeEnvironment").values()
    assert environment["Properties"]["ComputeResources"]["MinvCpus"] == 2


def test_image_pull_behavior_goes_into_the_ecs_agent_config(hardened: dict[str, Any], default: dict[str, Any]) -> None:
    (launch_template,) = _resources(hardened, "AWS::EC2::LaunchTemplate").values()
    user_data = json.dumps(launch_template["Properties"]["LaunchTemplateData"]["UserData"])
    assert "multipart/mixed" in user_data  # Batch merges only MIME multi-part user data
    assert "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached >> /etc/ecs/ecs.config" in user_data
    (plain,) = _resources(default, "AWS::EC2::LaunchTemplate").values()
    assert "UserData" not in plain["Properties"]["LaunchTemplateData"]
    for environment in _resources(default, "AWS::Batch::ComputeEnvironment").values():
        assert environment["Properties"]["ComputeResources"]["MinvCpus"] == 0


# --- user job tags -----------------------------------------------------------------------------------------------


def test_job_tags_output_and_the_adapter_may_set_only_allowed_keys(
    hardened: dict[str, Any], default: dict[str, Any]
) -> None:
    assert json.loads(hardened["Outputs"][StackOutput.JOB_TAGS]["Value"]) == JOB_TAGS
    assert StackOutput.JOB_TAGS not in default["Outputs"]
    (policy,) = _resources(hardened, "AWS::IAM::ManagedPolicy").values()
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    allowed = statements["TagOwnJobsAtSubmit"]["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"]
    assert sorted(allowed) == sorted([f"{JobTag.PREFIX}*", *JOB_TAGS, "project", "run-*"])
