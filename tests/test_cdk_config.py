"""The stack settings: cdk.json defaults, string values from ``cdk -c``, and bad values that must say what to fix."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

import pytest

from cdk_support import REPO, TEST_ENV, cdk_json_context
from stacks.config import ArchitectureChoice, ComputeChoice, RemovalChoice, StackConfig

pytestmark = pytest.mark.cdk


def _config(**context: Any) -> StackConfig:
    return StackConfig.from_context(context.get)


def test_cdk_json_holds_exactly_the_defaults() -> None:
    context = cdk_json_context()
    # Keys whose default is "unset" (None) are left out of cdk.json.
    assert set(context) == set(StackConfig.keys()) - {"vpc_id", "requirements_file", "image_uri"} | {"nag"}
    assert StackConfig.from_context(context.get) == StackConfig()


def test_defaults() -> None:
    config = _config()
    assert config.stack_name == "ScalerAwsBatch"
    assert config.vpc_id is None
    assert config.spot and config.on_demand_fallback and not config.gpu_queue
    assert config.python_version == "3.11"
    assert config.removal_policy is RemovalChoice.DESTROY and config.destroy_on_delete
    assert config.compute is ComputeChoice.EC2 and config.architecture is ArchitectureChoice.X86_64
    assert config.requirements_file is None and config.image_uri is None and config.system_packages == ()


def test_string_values_from_the_command_line_are_converted() -> None:
    config = _config(
        spot="false",
        max_vcpus="64",
        instance_types="m6i.large, c6i",
        gpu_instance_types='["g5"]',
        removal_policy="RETAIN",
        vpc_id="vpc-0123abcd",
    )
    assert config.spot is False
    assert config.max_vcpus == 64
    assert config.instance_types == ("m6i.large", "c6i")
    assert config.gpu_instance_types == ("g5",)
    assert config.removal_policy is RemovalChoice.RETAIN
    assert config.vpc_id == "vpc-0123abcd"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StackConfig().max_vcpus = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("stack_name", "1-bad", "CloudFormation stack name"),
        ("vpc_id", "vpc-XYZ", "existing VPC id"),
        ("vpc_id", "subnet-0123abcd", "existing VPC id"),
        ("max_vcpus", 0, "positive number of vCPUs"),
        ("max_vcpus", "many", "whole number"),
        ("max_vcpus", True, "whole number"),
        ("instance_types", [], "non-empty list"),
        ("instance_types", ["m7g"], "x86_64"),
        ("instance_types", ["c6gn.large"], "x86_64"),
        ("instance_types", ["a1.large"], "x86_64"),
        ("instance_types", ["optimal", "m6i"], "alone"),
        ("instance_types", ["M6I"], "instance type such as"),
        ("instance_types", 5, "list of strings"),
        ("spot", "yes", "true or false"),
        ("job_vcpus", 0, "whole number of vCPUs"),
        ("job_memory_mib", 64, "at least 128"),
        ("job_timeout_seconds", 59, "at least 60 seconds"),
        ("retry_attempts", 1, "2 to 10"),
        ("retry_attempts", 11, "2 to 10"),
        ("runnable_timeout_seconds", 599, "600 to 86400"),
        ("runnable_timeout_seconds", 86_401, "600 to 86400"),
        ("payload_prefix", "/leading/", "ending in '/'"),
        ("payload_prefix", "no-slash", "ending in '/'"),
        ("payload_retention_days", 0, "at least 1 day"),
        ("log_retention_days", 10, "retention periods"),
        ("removal_policy", "snapshot", "one of"),
        ("python_version", "3.9", "3.10 to 3.14"),
        ("python_version", 3.11, "non-empty string"),
        ("nat_gateways", 3, "0 to max_azs"),
        ("compute", "lambda", "one of ['ec2', 'fargate']"),
        ("architecture", "aarch64", "one of ['x86_64', 'arm64']"),
        ("job_vcpus", 1.5, "whole number of vCPUs"),
        ("ephemeral_storage_gib", 20, "21 to 200 GiB"),
        ("system_packages", ["libgomp1; curl evil"], "Debian package names"),
        ("system_packages", ["LibGomp"], "Debian package names"),
        ("image_uri", "not an image!", "image reference"),
        ("requirements_file", "no/such/requirements.txt", "existing pip requirements file"),
        ("min_vcpus", -1, "0 (scale to zero when idle)"),
        ("min_vcpus", 512, "up to max_vcpus (256)"),
        ("image_pull_behavior", "never", "prefer-cached"),
        ("job_secrets", {"1BAD": "arn:aws:ssm:us-east-1:123456789012:parameter/x"}, "environment variable names"),
        ("job_secrets", {"AWS_REGION": "arn:aws:ssm:us-east-1:123456789012:parameter/x"}, "not starting with AWS_"),
        ("job_secrets", {"TOKEN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"}, "6-character suffix"),
        ("job_secrets", "not json", "JSON object"),
        ("job_tags", {"aws:owner": "me"}, "reserves"),
        ("job_tags", {"scaler-batch:x": "y"}, "the adapter reserves"),
        ("job_tags", {f"k{i}": "v" for i in range(47)}, "drop 1 of them"),
        ("worker_tag_keys", ["scaler-batch:*"], "not starting with"),
    ],
)
def test_bad_context_raises_value_error_naming_the_key(key: str, value: object, hint: str) -> None:
    with pytest.raises(ValueError, match=rf"'{key}'.*{re.escape(hint)}"):
        _config(**{key: value})


def test_graviton_architecture_needs_graviton_instance_types() -> None:
    with pytest.raises(ValueError, match=r"'instance_types' is 'm6i'.*Graviton \(arm64\) type such as 'm7g'"):
        _config(architecture="arm64")  # the default families are x86_64
    with pytest.raises(ValueError, match=r"'instance_types'.*'optimal' picks x86_64 families only"):
        _config(architecture="arm64", instance_types="optimal")
    with pytest.raises(ValueError, match=r"'gpu_instance_types' is 'g4dn'.*Graviton"):
        _config(architecture="arm64", instance_types="m7g,c7g.large", gpu_queue=True)
    config = _config(
        architecture="arm64", instance_types="m7g,c6gn.xlarge,r8gd", gpu_queue=True, gpu_instance_types="g5g"
    )
    assert config.architecture is ArchitectureChoice.ARM64 and config.instance_types == ("m7g", "c6gn.xlarge", "r8gd")


def test_fargate_ignores_instance_types_and_refuses_gpu() -> None:
    config = _config(compute="fargate", architecture="arm64")  # the x86_64 defaults of instance_types do not apply
    assert config.compute is ComputeChoice.FARGATE
    with pytest.raises(ValueError, match=r"'gpu_queue'.*Fargate has no GPUs"):
        _config(compute="fargate", gpu_queue=True)
    with pytest.raises(ValueError, match=r"'min_vcpus'.*0 with compute=fargate"):
        _config(compute="fargate", min_vcpus=4)
    with pytest.raises(ValueError, match=r"'image_pull_behavior'.*'default' with compute=fargate"):
        _config(compute="fargate", image_pull_behavior="prefer-cached")


def test_fargate_job_size_must_be_a_fargate_combination() -> None:
    assert _config(compute="fargate", job_vcpus="0.25", job_memory_mib=512).job_vcpus == 0.25
    with pytest.raises(ValueError, match=r"'job_vcpus'.*nearest valid combination is vcpus=2, memory=16384"):
        _config(compute="fargate", job_vcpus=1, job_memory_mib=16384)
    with pytest.raises(ValueError, match=r"'job_vcpus'.*nearest valid combination is vcpus=4, memory=8192"):
        _config(compute="fargate", job_vcpus=3, job_memory_mib=4096)


def test_prebuilt_image_excludes_build_settings(tmp_path: pathlib.Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.1.0\n")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-runner@sha256:" + "a" * 64
    assert _config(image_uri=image).image_uri == image
    assert _config(requirements_file=str(requirements)).requirements_path == requirements
    for key, value in (("requirements_file", str(requirements)), ("system_packages", "libgomp1")):
        with pytest.raises(ValueError, match=rf"'{key}'.*nothing when image_uri is set"):
            _config(image_uri=image, **{key: value})


def test_spot_off_needs_the_on_demand_environment() -> None:
    with pytest.raises(ValueError, match=r"'on_demand_fallback'.*true when spot is false"):
        _config(spot=False, on_demand_fallback=False)


def test_job_vcpus_cannot_exceed_max_vcpus() -> None:
    with pytest.raises(ValueError, match=r"'job_vcpus'.*max_vcpus \(4\)"):
        _config(max_vcpus=4, job_vcpus=8)


def test_build_app_rejects_bad_context() -> None:
    from app import build_app

    with pytest.raises(ValueError, match=r"'retry_attempts' is 1: set it to 2 to 10"):
        build_app(cdk_json_context(retry_attempts=1), env={})
    with pytest.raises(ValueError, match=r"'nag'.*true or false"):
        build_app(cdk_json_context(nag="maybe"), env={})


def test_existing_vpc_needs_account_and_region() -> None:
    from app import build_app

    with pytest.raises(ValueError, match=r"'vpc_id'.*needs a concrete account and region"):
        build_app(cdk_json_context(vpc_id="vpc-0123abcd"), env={})
    build_app(cdk_json_context(vpc_id="vpc-0123abcd"), env=TEST_ENV, nag=False)  # the lookup path builds


def test_stack_name_comes_from_context() -> None:
    from app import build_app

    _, stack = build_app(cdk_json_context(stack_name="ScalerDev"), env={}, nag=False)
    assert stack.stack_name == "ScalerDev"


def test_deploy_doc_describes_every_context_key() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    missing = [key for key in (*StackConfig.keys(), "nag") if f"`{key}`" not in doc]
    assert missing == [], f"docs/deploy.md does not describe {missing}"
