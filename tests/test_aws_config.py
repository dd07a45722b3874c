"""Settings for ``scaler-batch worker --backend aws-batch``: precedence, sources and validation.

DescribeStacks runs against moto's CloudFormation in server mode, over real HTTP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from scaler_aws_batch import cli, config
from scaler_aws_batch.backends.aws_batch.settings import (
    AwsBatchSettings,
    build_aws_batch_backend,
    check_image_python,
    load_aws_batch_settings,
)
from scaler_aws_batch.contracts import StackOutput
from scaler_aws_batch.wire import python_version_tag
from scaler_aws_batch.worker_settings import WorkerSettings

REGION = "eu-west-1"
QUEUE_ARN = "arn:aws:batch:eu-west-1:123456789012:job-queue/spot-queue"
ON_DEMAND_ARN = "arn:aws:batch:eu-west-1:123456789012:job-queue/on-demand-queue"
GPU_ARN = "arn:aws:batch:eu-west-1:123456789012:job-queue/gpu-queue"
JOB_DEFINITION_ARN = "arn:aws:batch:eu-west-1:123456789012:job-definition/runner:4"
STACK_OUTPUTS = {
    StackOutput.JOB_QUEUE_ARN: QUEUE_ARN,
    StackOutput.ON_DEMAND_JOB_QUEUE_ARN: ON_DEMAND_ARN,
    StackOutput.GPU_JOB_QUEUE_ARN: GPU_ARN,
    StackOutput.JOB_DEFINITION_ARN: JOB_DEFINITION_ARN,
    StackOutput.BUCKET_NAME: "stack-bucket",
    StackOutput.PAYLOAD_PREFIX: "stack-prefix",
    StackOutput.REGION: REGION,
    StackOutput.LOG_GROUP_NAME: "/aws/batch/stack",
    StackOutput.ADAPTER_POLICY_ARN: "arn:aws:iam::123456789012:policy/adapter",
}


@pytest.fixture(autouse=True)
def _no_ambient_aws_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(AwsBatchSettings, parser, "aws")
    return parser.parse_args(list(argv))


def _load_toml(path: str, args: argparse.Namespace, env: dict[str, str]) -> AwsBatchSettings:
    section = config.file_section(config.read_config_file(path), AwsBatchSettings, path)
    return load_aws_batch_settings(args, env, section)


def _write_toml(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


REQUIRED_FLAGS = ("--job-queue", "q1", "--job-definition", "jd", "--bucket", "my-bucket", "--region", "us-east-1")


# ---------------------------------------------------------------------------------------------------- sources


def test_flags_not_given_are_absent_so_lower_layers_apply() -> None:
    assert vars(_parse()) == {}


def test_flags_only_with_defaults() -> None:
    settings = load_aws_batch_settings(_parse(*REQUIRED_FLAGS), {})
    assert settings == AwsBatchSettings(job_queue="q1", job_definition="jd", bucket="my-bucket", region="us-east-1")
    assert settings.prefix == "scaler-tasks"
    assert settings.log_group == "/aws/batch/job"
    assert (settings.submit_tps, settings.describe_tps) == (40.0, 10.0)
    assert settings.on_demand_queue is None and settings.gpu_queue is None and settings.endpoint_url is None


def test_every_flag_is_read() -> None:
    args = _parse(
        *REQUIRED_FLAGS,
        *("--on-demand-queue", "od", "--gpu-queue", "gpu", "--prefix", "a/b", "--log-group", "/g"),
        *("--endpoint-url", "http://127.0.0.1:5000"),
        *("--submit-tps", "12.5", "--describe-tps", "3"),
    )
    settings = load_aws_batch_settings(args, {})
    assert (settings.on_demand_queue, settings.gpu_queue, settings.prefix, settings.log_group) == (
        "od",
        "gpu",
        "a/b",
        "/g",
    )
    assert settings.endpoint_url == "http://127.0.0.1:5000"
    assert (settings.submit_tps, settings.describe_tps) == (12.5, 3.0)


def test_environment_only() -> None:
    env = {
        "SCALER_BATCH_JOB_QUEUE": "env-queue",
        "SCALER_BATCH_ON_DEMAND_QUEUE": "env-od",
        "SCALER_BATCH_GPU_QUEUE": "env-gpu",
        "SCALER_BATCH_JOB_DEFINITION": "env-jd:3",
        "SCALER_BATCH_BUCKET": "env-bucket",
        "SCALER_BATCH_PREFIX": "env-prefix",
        "SCALER_BATCH_REGION": "ap-southeast-2",
        "SCALER_BATCH_LOG_GROUP": "/env/group",
        "SCALER_BATCH_ENDPOINT_URL": "https://batch.example.internal",
        "SCALER_BATCH_SUBMIT_TPS": "50",
        "SCALER_BATCH_DESCRIBE_TPS": "2.5",
    }
    settings = load_aws_batch_settings(_parse(), env)
    assert settings == AwsBatchSettings(
        job_queue="env-queue",
        on_demand_queue="env-od",
        gpu_queue="env-gpu",
        job_definition="env-jd:3",
        bucket="env-bucket",
        prefix="env-prefix",
        region="ap-southeast-2",
        log_group="/env/group",
        endpoint_url="https://batch.example.internal",
        submit_tps=50.0,
        describe_tps=2.5,
    )


def test_precedence_flags_then_env_then_config_file_then_stack_outputs(tmp_path: Path) -> None:
    outputs = _write(tmp_path, "cdk-outputs.json", {"ScalerBatch": STACK_OUTPUTS})
    config_file = _write_toml(
        tmp_path,
        "worker.toml",
        '[aws_batch]\njob_queue = "file-queue"\nbucket = "file-bucket"\nprefix = "file-prefix"\nsubmit-tps = 5\n',
    )
    args = _parse("--job-queue", "flag-queue", "--stack-outputs", outputs)
    env = {"SCALER_BATCH_JOB_QUEUE": "env-queue", "SCALER_BATCH_BUCKET": "env-bucket", "AWS_REGION": "us-west-2"}

    settings = _load_toml(config_file, args, env)

    assert settings.job_queue == "flag-queue"  # flag beats env, file and stack
    assert settings.bucket == "env-bucket"  # env beats file and stack
    assert settings.prefix == "file-prefix"  # file beats stack
    assert settings.submit_tps == 5.0  # TOML keys take hyphens or underscores, as in Scaler
    assert settings.job_definition == JOB_DEFINITION_ARN  # only the stack has it
    assert settings.on_demand_queue == ON_DEMAND_ARN
    assert settings.gpu_queue == GPU_ARN
    assert settings.log_group == "/aws/batch/stack"
    assert settings.region == REGION  # the stack's region beats the generic AWS_REGION fallback


def test_aws_region_is_the_last_fallback() -> None:
    args = _parse("--job-queue", "q", "--job-definition", "jd", "--bucket", "bucket-1")
    assert load_aws_batch_settings(args, {"AWS_DEFAULT_REGION": "ca-central-1"}).region == "ca-central-1"
    assert load_aws_batch_settings(args, {"AWS_REGION": "sa-east-1", "AWS_DEFAULT_REGION": "x"}).region == "sa-east-1"
    with pytest.raises(ValueError, match=r"region is not set.*--region / SCALER_BATCH_REGION.*AWS_REGION"):
        load_aws_batch_settings(args, {})


def test_config_file_rejects_unknown_keys(tmp_path: Path) -> None:
    config_file = _write_toml(tmp_path, "worker.toml", '[aws_batch]\njob_queue = "q"\njob_qeueu = "typo"\n')
    with pytest.raises(ValueError, match=r"unknown key 'job_qeueu' in \[aws_batch\]"):
        _load_toml(config_file, _parse(), {})


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        _load_toml(str(tmp_path / "missing.toml"), _parse(), {})
    with pytest.raises(ValueError, match="not valid TOML"):
        _load_toml(_write_toml(tmp_path, "broken.toml", "[aws_batch\n"), _parse(), {})
    with pytest.raises(ValueError, match=r"\[aws_batch\] must be a table"):
        _load_toml(_write_toml(tmp_path, "flat.toml", 'aws_batch = "q"\n'), _parse(), {})


def test_cdk_outputs_file_with_one_stack(tmp_path: Path) -> None:
    outputs = _write(
        tmp_path, "cdk-outputs.json", {"ScalerBatch": {**STACK_OUTPUTS, StackOutput.PAYLOAD_PREFIX: "tasks/"}}
    )
    settings = load_aws_batch_settings(_parse("--stack-outputs", outputs), {})
    assert settings.job_queue == QUEUE_ARN
    assert settings.job_definition == JOB_DEFINITION_ARN
    assert settings.bucket == "stack-bucket"
    assert settings.prefix == "tasks"  # a trailing slash from the stack is tolerated
    assert settings.region == REGION


def test_cdk_outputs_file_with_several_stacks_needs_stack(tmp_path: Path) -> None:
    other = {**STACK_OUTPUTS, StackOutput.BUCKET_NAME: "other-bucket"}
    del other[StackOutput.GPU_JOB_QUEUE_ARN]  # optional output
    outputs = _write(tmp_path, "cdk-outputs.json", {"ScalerBatch": STACK_OUTPUTS, "ScalerBatchDev": other})
    with pytest.raises(ValueError, match=r"2 stacks \(ScalerBatch, ScalerBatchDev\).*--stack NAME"):
        load_aws_batch_settings(_parse("--stack-outputs", outputs), {})
    with pytest.raises(ValueError, match=r"stack 'Nope' \(--stack\) is not in"):
        load_aws_batch_settings(_parse("--stack-outputs", outputs, "--stack", "Nope"), {})
    settings = load_aws_batch_settings(_parse("--stack-outputs", outputs, "--stack", "ScalerBatchDev"), {})
    assert settings.bucket == "other-bucket"
    assert settings.gpu_queue is None


def test_missing_required_settings_are_listed() -> None:
    with pytest.raises(
        ValueError,
        match=r"job_definition \(--job-definition / SCALER_BATCH_JOB_DEFINITION\), bucket \(--bucket / "
        r"SCALER_BATCH_BUCKET\).*--stack",
    ):
        load_aws_batch_settings(_parse("--job-queue", "q", "--region", "us-east-1"), {})


# ---------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (("--submit-tps", "60"), {}, r"at most 50.*--submit-tps / SCALER_BATCH_SUBMIT_TPS"),
        (("--submit-tps", "0"), {}, r"greater than 0 \(--submit-tps / SCALER_BATCH_SUBMIT_TPS\)"),
        ((), {"SCALER_BATCH_DESCRIBE_TPS": "fast"}, r"number \(--describe-tps / SCALER_BATCH_DESCRIBE_TPS\)"),
        (("--prefix", "/tasks/"), {}, r"must not start or end with '/' \(--prefix / SCALER_BATCH_PREFIX\)"),
        (("--bucket", "Not_A_Bucket"), {}, r"not a valid S3 bucket name \(--bucket / SCALER_BATCH_BUCKET\)"),
        (("--region", "mars"), {}, r"not an AWS region .*--region / SCALER_BATCH_REGION"),
        (("--job-queue", "bad queue"), {}, r"job queue name or ARN \(--job-queue / SCALER_BATCH_JOB_QUEUE\)"),
        (("--job-definition", "jd:latest"), {}, r"name:revision or job-definition ARN \(--job-definition"),
        (("--endpoint-url", "localhost:5000"), {}, r"http:// or https:// \(--endpoint-url / SCALER_BATCH_ENDPOINT"),
    ],
)
def test_bad_values_name_the_flag_and_the_env_var(extra: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_aws_batch_settings(_parse(*REQUIRED_FLAGS, *extra), env)


def test_bad_config_file_types_are_rejected(tmp_path: Path) -> None:
    config_file = _write_toml(tmp_path, "worker.toml", "[aws_batch]\nsubmit_tps = true\n")
    with pytest.raises(ValueError, match=r"number \(--submit-tps / SCALER_BATCH_SUBMIT_TPS\)"):
        _load_toml(config_file, _parse(*REQUIRED_FLAGS), {})
    config_file = _write_toml(tmp_path, "worker2.toml", "[aws_batch]\nbucket = 42\n")
    with pytest.raises(ValueError, match=r"bucket must be a string"):
        _load_toml(config_file, _parse("--job-queue", "q", "--region", "us-east-1"), {})


def test_settings_validate_on_direct_construction() -> None:
    with pytest.raises(ValueError, match="job_queue is required"):
        AwsBatchSettings(job_queue="", job_definition="jd", bucket="b-1", region="us-east-1")
    with pytest.raises(ValueError, match="submit_tps must be a number"):
        AwsBatchSettings(job_queue="q", job_definition="jd", bucket="b-1", region="us-east-1", submit_tps="2")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- DescribeStacks


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _create_stack(moto_url: str, outputs: dict[str, str]) -> str:
    name = f"ScalerBatch-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION).client(
        "cloudformation", endpoint_url=moto_url
    )
    client.create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def test_stack_outputs_from_describe_stacks(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _create_stack(moto_url, STACK_OUTPUTS)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    args = _parse("--stack", stack, "--endpoint-url", moto_url, "--region", REGION)

    settings = load_aws_batch_settings(args, {})  # the default client factory honours endpoint_url and region

    assert settings.job_queue == QUEUE_ARN
    assert settings.on_demand_queue == ON_DEMAND_ARN
    assert settings.job_definition == JOB_DEFINITION_ARN
    assert settings.bucket == "stack-bucket"
    assert settings.prefix == "stack-prefix"
    assert settings.endpoint_url == moto_url


def test_describe_stacks_uses_the_injected_factory_and_env_region(moto_url: str) -> None:
    stack = _create_stack(moto_url, {k: v for k, v in STACK_OUTPUTS.items() if k != StackOutput.GPU_JOB_QUEUE_ARN})
    seen: list[tuple[str | None, str | None]] = []

    def factory(region: str | None, endpoint_url: str | None) -> Any:
        seen.append((region, endpoint_url))
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        return session.client("cloudformation", region_name=region, endpoint_url=moto_url)

    env = {"SCALER_BATCH_REGION": REGION, "SCALER_BATCH_BUCKET": "env-bucket"}
    settings = load_aws_batch_settings(_parse("--stack", stack), env, cloudformation_client_factory=factory)

    assert seen == [(REGION, None)]
    assert settings.bucket == "env-bucket"  # env still beats the stack
    assert settings.gpu_queue is None
    assert settings.job_queue == QUEUE_ARN


def test_describe_stacks_unknown_stack(moto_url: str) -> None:
    def factory(region: str | None, endpoint_url: str | None) -> Any:
        del endpoint_url
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        return session.client("cloudformation", region_name=region, endpoint_url=moto_url)

    with pytest.raises(ValueError, match=r"stack 'DoesNotExist'.*--stack"):
        load_aws_batch_settings(
            _parse("--stack", "DoesNotExist", "--region", REGION), {}, cloudformation_client_factory=factory
        )


# ---------------------------------------------------------------------------------------------------- backend


def test_build_aws_batch_backend_uses_the_settings() -> None:
    settings = AwsBatchSettings(
        job_queue="q1",
        job_definition="jd:2",
        bucket="my-bucket",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        log_group="/custom/group",
        submit_tps=20,
        describe_tps=4,
    )
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    backend = build_aws_batch_backend(settings, session=session)
    try:
        assert backend.name == "aws-batch"
        assert (backend.job_queue, backend.job_definition, backend.log_group) == ("q1", "jd:2", "/custom/group")
        assert backend.limiter("SubmitJob").rate == 20
        assert backend.limiter("DescribeJobs").rate == 4
        assert backend.api_calls == {}
    finally:
        backend.close()


# ---------------------------------------------------------------------------------------------------- job image check


def _worker_with_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, python: str) -> str:
    """Run `scaler-batch worker` on a cdk-outputs.json whose job image has Python ``python``; return its stderr."""
    outputs = {**STACK_OUTPUTS, StackOutput.PYTHON_VERSION: python, StackOutput.ARCHITECTURE: "arm64"}
    path = _write(tmp_path, "cdk-outputs.json", {"ScalerBatch": outputs})
    argv = ["worker", "--backend", "aws-batch", "--scheduler", "tcp://127.0.0.1:1", "--stack-outputs", path, *extra]
    assert cli.main(argv) == 2  # refused before it connects to anything
    return capsys.readouterr().err


def test_stack_outputs_fill_the_image_python_and_architecture(tmp_path: Path) -> None:
    outputs = {**STACK_OUTPUTS, StackOutput.PYTHON_VERSION: "3.12", StackOutput.ARCHITECTURE: "arm64"}
    settings = load_aws_batch_settings(
        _parse("--stack-outputs", _write(tmp_path, "cdk-outputs.json", {"ScalerBatch": outputs})), {}
    )
    assert (settings.image_python, settings.image_architecture) == ("3.12", "arm64")
    with pytest.raises(ValueError, match=r"image_architecture must be one of x86_64, arm64"):
        AwsBatchSettings(
            job_queue="q", job_definition="jd", bucket="my-bucket", region=REGION, image_architecture="ia64"
        )


def test_worker_refuses_to_start_when_the_image_python_differs_from_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = python_version_tag()
    image = "3.99" if ours != "3.99" else "3.98"
    message = _worker_with_outputs(tmp_path, capsys, python=image)
    assert f"the job image runs Python {image} (stack output PythonVersion" in message
    assert f"clients use Python {ours} (this worker's own Python" in message
    assert f"-c python_version={ours}" in message and f"--client-python {image}" in message


def test_worker_refuses_a_client_python_the_image_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = _worker_with_outputs(tmp_path, capsys, "--client-python", "3.10", python="3.12")
    assert "the job image runs Python 3.12" in message and "clients use Python 3.10 (client_python;" in message
    assert "-c python_version=3.10" in message


def test_matching_client_python_passes_the_image_check(tmp_path: Path) -> None:
    outputs = {**STACK_OUTPUTS, StackOutput.PYTHON_VERSION: "3.12"}
    settings = load_aws_batch_settings(
        _parse("--stack-outputs", _write(tmp_path, "cdk-outputs.json", {"ScalerBatch": outputs})), {}
    )
    check_image_python(settings, WorkerSettings(client_python="3.12"))  # the clients say they use the image's
    unchecked = dataclasses.replace(settings, image_python=None)  # a stack without the output: nothing to compare
    check_image_python(unchecked, WorkerSettings(client_python="3.10"))
