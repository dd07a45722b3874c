"""The stack's variants beyond the default (tests/test_cdk_stack.py): Fargate and Fargate Spot, Graviton (arm64), a
prebuilt image, and a built image with the user's requirements and system packages.

Each variant is synthesized once for the module, with the cdk-nag gate on (an unacknowledged finding fails the
synth); cfn-lint and checkov then run once over all the variants' templates.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest

from cdk_support import (
    CHECKOV_TEMPLATE_SKIPS,
    NO_ENV,
    STACK_NAME,
    cdk_json_context,
    cfn_lint_unexpected,
    checkov_failures,
    synth_to,
)
from scaler_aws_batch.contracts import SPOT_RETRY_EVALUATE_ON_EXIT

pytestmark = pytest.mark.cdk

from aws_cdk.assertions import Match, Template  # noqa: E402  (after cdk_support, which quiets jsii's banner)

DOCKERFILE = pathlib.Path(__file__).resolve().parent.parent / "container" / "Dockerfile"
ECR_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/scaler-runner@sha256:" + "ab" * 32
#: A hash-pinned requirements file, as `pip-compile --generate-hashes` writes it.
REQUIREMENTS = "numpy==2.1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n# a comment\n"

Synthesized = tuple[pathlib.Path, dict[str, Any]]


@pytest.fixture(scope="module")
def requirements_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("user-project") / "requirements-job.txt"
    path.write_text(REQUIREMENTS)
    return path


@pytest.fixture(scope="module")
def fargate_built(tmp_path_factory: pytest.TempPathFactory, requirements_file: pathlib.Path) -> Synthesized:
    """Fargate Spot then Fargate, x86_64, the runner image built with requirements and a system package."""
    context = cdk_json_context(
        compute="fargate",
        requirements_file=str(requirements_file),
        system_packages=["libgomp1"],
        job_vcpus=0.5,
        job_memory_mib=1024,
        ephemeral_storage_gib=50,
    )
    outdir = tmp_path_factory.mktemp("fargate-built")
    return outdir, synth_to(outdir, context, env=NO_ENV)


@pytest.fixture(scope="module")
def fargate_arm_prebuilt(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Fargate on Graviton with a prebuilt image in a private ECR repository: nothing to build."""
    context = cdk_json_context(compute="fargate", architecture="arm64", image_uri=ECR_IMAGE, python_version="3.12")
    outdir = tmp_path_factory.mktemp("fargate-arm-prebuilt")
    return outdir, synth_to(outdir, context, env=NO_ENV)


@pytest.fixture(scope="module")
def ec2_arm_built(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """EC2 Spot then On-Demand on Graviton families, with a Graviton GPU queue, the runner image built for arm64."""
    context = cdk_json_context(
        architecture="arm64", instance_types=["m7g", "c7g.xlarge"], gpu_queue=True, gpu_instance_types=["g5g"]
    )
    outdir = tmp_path_factory.mktemp("ec2-arm-built")
    return outdir, synth_to(outdir, context, env=NO_ENV)


def _resources(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == resource_type}


def _job_definition(template: Mapping[str, Any]) -> dict[str, Any]:
    (definition,) = _resources(template, "AWS::Batch::JobDefinition").values()
    return dict(definition["Properties"])


def _queue_order(template: dict[str, Any], output: str) -> list[str]:
    """The compute environment types of a queue (by its output), in order."""
    queue_id = template["Outputs"][output]["Value"]["Fn::GetAtt"][0]
    environments = template["Resources"][queue_id]["Properties"]["ComputeEnvironmentOrder"]
    types = []
    for item in sorted(environments, key=lambda entry: entry["Order"]):
        environment = template["Resources"][item["ComputeEnvironment"]["Fn::GetAtt"][0]]
        types.append(environment["Properties"]["ComputeResources"]["Type"])
    return types


def _docker_images(outdir: pathlib.Path) -> dict[str, Any]:
    manifest = json.loads((outdir / f"{STACK_NAME}.assets.json").read_text())
    return dict(manifest.get("dockerImages", {}))


# --- Fargate -----------------------------------------------------------------------------------------------------


def test_fargate_queues_are_fargate_spot_first_then_fargate(fargate_built: Synthesized) -> None:
    _, template = fargate_built
    assert _queue_order(template, "JobQueueArn") == ["FARGATE_SPOT", "FARGATE"]
    assert _queue_order(template, "OnDemandJobQueueArn") == ["FARGATE"]
    Template.from_json(template).resource_count_is("AWS::EC2::LaunchTemplate", 0)
    (security_group_id,) = _resources(template, "AWS::EC2::SecurityGroup")
    for environment in _resources(template, "AWS::Batch::ComputeEnvironment").values():
        resources = environment["Properties"]["ComputeResources"]
        assert resources["SecurityGroupIds"] == [{"Fn::GetAtt": [security_group_id, "GroupId"]}]
        subnets = [template["Resources"][subnet["Ref"]] for subnet in resources["Subnets"]]
        assert subnets and all(subnet["Properties"]["MapPublicIpOnLaunch"] is False for subnet in subnets)
        assert all("Private" in json.dumps(subnet["Properties"]["Tags"]) for subnet in subnets)


def test_fargate_job_definition_is_locked_down_in_private_subnets(fargate_built: Synthesized) -> None:
    _, template = fargate_built
    definition = _job_definition(template)
    assert definition["PlatformCapabilities"] == ["FARGATE"]
    container = definition["ContainerProperties"]
    assert container["Privileged"] is False and container["ReadonlyRootFilesystem"] is True
    assert container["NetworkConfiguration"] == {"AssignPublicIp": "DISABLED"}
    assert container["EphemeralStorage"] == {"SizeInGiB": 50}
    assert container["FargatePlatformConfiguration"] == {"PlatformVersion": "LATEST"}
    assert container["RuntimePlatform"] == {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}
    assert sorted(container["ResourceRequirements"], key=lambda item: item["Type"]) == [
        {"Type": "MEMORY", "Value": "1024"},
        {"Type": "VCPU", "Value": "0.5"},
    ]
    # Fargate takes no host volumes: /tmp is a task-storage volume (name only) on the ephemeral storage.
    assert container["Volumes"] == [{"Name": "scratch"}]
    assert container["MountPoints"] == [{"ContainerPath": "/tmp", "SourceVolume": "scratch"}]
    (execution_role_id,) = [key for key in _resources(template, "AWS::IAM::Role") if "ExecutionRole" in key]
    assert container["ExecutionRoleArn"] == {"Fn::GetAtt": [execution_role_id, "Arn"]}


def test_fargate_spot_interruptions_are_retried_like_ec2_spot_reclaims(fargate_built: Synthesized) -> None:
    _, template = fargate_built
    evaluate = _job_definition(template)["RetryStrategy"]["EvaluateOnExit"]
    expected = [
        {key[0].upper() + key[1:]: value for key, value in entry.items()} for entry in SPOT_RETRY_EVALUATE_ON_EXIT
    ]
    assert evaluate == expected
    assert {"Action": "RETRY", "OnStatusReason": "Your Spot Task was interrupted*"} in evaluate
    assert evaluate[-1] == {"Action": "EXIT", "OnReason": "*"}


def test_requirements_and_system_packages_reach_the_image_build(
    fargate_built: Synthesized, requirements_file: pathlib.Path
) -> None:
    """The emulator runs jobs from the local environment, so the image build is checked in the cloud assembly: the
    requirements file's directory is the build context the Dockerfile's `requirements` stage is replaced by, and its
    name and the packages are build arguments."""
    outdir, _ = fargate_built
    (image,) = _docker_images(outdir).values()
    source = image["source"]
    assert source["dockerFile"] == "container/Dockerfile"
    assert source["platform"] == "linux/amd64"
    assert source["dockerBuildArgs"] == {
        "PYTHON_VERSION": "3.11",
        "REQUIREMENTS_FILE": requirements_file.name,
        "SYSTEM_PACKAGES": "libgomp1",
    }
    assert source["dockerBuildContexts"] == {"requirements": str(requirements_file.parent)}
    assert (pathlib.Path(source["dockerBuildContexts"]["requirements"]) / requirements_file.name).read_text() == (
        REQUIREMENTS
    )
    dockerfile = DOCKERFILE.read_text()
    assert "FROM scratch AS requirements" in dockerfile
    assert "--mount=type=bind,from=requirements" in dockerfile and 'ARG REQUIREMENTS_FILE=""' in dockerfile


def test_a_changed_requirements_file_makes_a_new_image(tmp_path: pathlib.Path) -> None:
    from app import build_app

    requirements = tmp_path / "requirements.txt"
    images = []
    for content in ("numpy==2.1.0\n", "numpy==2.1.1\n"):
        requirements.write_text(content)
        _, stack = build_app(
            cdk_json_context(requirements_file=str(requirements)), outdir=str(tmp_path / content), env=NO_ENV, nag=False
        )
        images.append(json.dumps(_job_definition(Template.from_stack(stack).to_json())["ContainerProperties"]["Image"]))
    assert images[0] != images[1]


def _run_requirements_step(tmp_path: pathlib.Path, requirements: str) -> list[str]:
    """Run the Dockerfile's requirements RUN step with ``sh`` against a fake ``python -m pip`` that records pip's
    arguments (tests/test_image.py builds real images with both kinds of requirements file)."""
    dockerfile = DOCKERFILE.read_text()
    start = dockerfile.index("RUN --mount=type=bind,from=requirements")
    step = dockerfile[start : dockerfile.index("\n# ", start)].split("\\\n", 1)[1].replace("\\\n", "")
    context = tmp_path / "requirements"
    context.mkdir()
    (context / "requirements.txt").write_text(requirements)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "pip-calls"
    # The step runs `python -m pip ...`: this `python` records pip's arguments.
    (fake_bin / "python").write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] || exit 9\nshift 2\necho "$*" >> {calls}\n')
    (fake_bin / "python").chmod(0o755)
    result = subprocess.run(
        ["sh", "-c", step.replace("/requirements", str(context))],
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "REQUIREMENTS_FILE": "requirements.txt"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return calls.read_text().splitlines()


def test_requirements_with_hashes_install_in_hash_checking_mode(tmp_path: pathlib.Path) -> None:
    assert _run_requirements_step(tmp_path, REQUIREMENTS) == ["install --require-hashes -r requirements.txt", "check"]


def test_requirements_without_hashes_install_plainly(tmp_path: pathlib.Path) -> None:
    assert _run_requirements_step(tmp_path, "numpy==2.1.0\n") == ["install -r requirements.txt", "check"]


# --- prebuilt image ----------------------------------------------------------------------------------------------


def test_prebuilt_ecr_image_needs_no_build_and_gets_a_pull_grant(fargate_arm_prebuilt: Synthesized) -> None:
    outdir, template = fargate_arm_prebuilt
    assert _docker_images(outdir) == {}, "a prebuilt image must leave nothing for `cdk deploy` to build"
    container = _job_definition(template)["ContainerProperties"]
    image = json.dumps(container["Image"])
    assert "123456789012.dkr.ecr.eu-west-1." in image and "/team/scaler-runner@sha256:" + "ab" * 32 in image
    assert container["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    repository_arn = ":ecr:eu-west-1:123456789012:repository/team/scaler-runner"
    Template.from_json(template).has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Action": Match.array_with(["ecr:BatchGetImage"]),
                                    "Resource": {
                                        "Fn::Join": ["", Match.array_with([Match.string_like_regexp(repository_arn)])]
                                    },
                                }
                            )
                        ]
                    )
                }
            )
        },
    )


def test_outputs_name_the_image_python_and_architecture(
    fargate_arm_prebuilt: Synthesized, ec2_arm_built: Synthesized, fargate_built: Synthesized
) -> None:
    for (_, template), python, architecture in (
        (fargate_arm_prebuilt, "3.12", "arm64"),
        (ec2_arm_built, "3.11", "arm64"),
        (fargate_built, "3.11", "x86_64"),
    ):
        assert template["Outputs"]["PythonVersion"]["Value"] == python
        assert template["Outputs"]["Architecture"]["Value"] == architecture


def test_prebuilt_public_image_is_used_as_is(tmp_path: pathlib.Path) -> None:
    from app import build_app

    image = "public.ecr.aws/my-org/scaler-runner:1.0"
    _, stack = build_app(cdk_json_context(image_uri=image), outdir=str(tmp_path), env=NO_ENV, nag=False)
    template = Template.from_stack(stack).to_json()
    assert _job_definition(template)["ContainerProperties"]["Image"] == image
    assert "ecr:BatchGetImage" not in json.dumps(_resources(template, "AWS::IAM::Policy"))


# --- Graviton on EC2 ---------------------------------------------------------------------------------------------


def test_graviton_ec2_builds_for_arm64_and_uses_graviton_instances(ec2_arm_built: Synthesized) -> None:
    outdir, template = ec2_arm_built
    (image,) = _docker_images(outdir).values()
    assert image["source"]["platform"] == "linux/arm64"
    assert _queue_order(template, "JobQueueArn") == ["SPOT", "EC2"]
    types = sorted(
        sorted(environment["Properties"]["ComputeResources"]["InstanceTypes"])
        for environment in _resources(template, "AWS::Batch::ComputeEnvironment").values()
    )
    assert types == [["c7g.xlarge", "m7g"], ["c7g.xlarge", "m7g"], ["g5g"]]  # Spot, On-Demand, GPU
    definition = _job_definition(template)
    assert definition["PlatformCapabilities"] == ["EC2"] and "RuntimePlatform" not in definition["ContainerProperties"]


# --- gates -------------------------------------------------------------------------------------------------------


def test_cdk_nag_cfn_lint_and_checkov_are_clean_for_every_variant(
    fargate_built: Synthesized, fargate_arm_prebuilt: Synthesized, ec2_arm_built: Synthesized
) -> None:
    for outdir, _ in (fargate_built, fargate_arm_prebuilt, ec2_arm_built):
        report = json.loads((outdir / "validation-report.json").read_text())
        assert [plugin["violations"] for plugin in report["pluginReports"]] == [[]]
        template = outdir / f"{STACK_NAME}.template.json"
        unexpected, returncode, stderr = cfn_lint_unexpected(template)
        assert unexpected == [], json.dumps(unexpected, indent=1)
        assert returncode in (0, 4), stderr
        failed, returncode = checkov_failures(template, "cloudformation", CHECKOV_TEMPLATE_SKIPS)
        assert failed == [] and returncode == 0, (outdir.name, failed)
