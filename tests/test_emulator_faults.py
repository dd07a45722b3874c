"""Fault injection, shutdown, and pass-through of the other services to moto."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any, Literal

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from batch_emulator import BatchEmulator, EmulatorConfig, Faults, JobInfo
from batch_emulator.testing import describe_job, log_messages, wait_for_status, wait_until
from scaler_aws_batch.contracts import SPOT_RETRY_EVALUATE_ON_EXIT, StatusReason

SPOT_RETRY = {
    "attempts": 3,
    "evaluateOnExit": list(SPOT_RETRY_EVALUATE_ON_EXIT),
}
SLEEP = "import sys, time; print('up', flush=True); time.sleep(float(sys.argv[1]))"


@pytest.fixture
def emu() -> Iterator[BatchEmulator]:
    with BatchEmulator(EmulatorConfig(), Faults(seed=7)) as emulator:
        yield emulator


def test_spot_reclaim_on_attempt_1_then_success_on_attempt_2(emu: BatchEmulator) -> None:
    emu.faults.spot_reclaim_attempts = {1}
    queue, jobdef = emu.create_queue_and_job_definition(
        command=["python3", "-c", SLEEP, "0.2"], retry_strategy=SPOT_RETRY
    )
    batch = emu.client("batch")
    job_id = batch.submit_job(jobName="spot", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    assert len(job["attempts"]) == 2
    first, second = job["attempts"]
    assert first["statusReason"] == f"{StatusReason.SPOT_RECLAIM_PREFIX} (instance i-0123456789abcdef0) terminated."
    assert "exitCode" not in first["container"]
    assert second["container"]["exitCode"] == 0


def test_spot_reclaim_without_retries_left_fails_the_job(emu: BatchEmulator) -> None:
    emu.faults.spot_reclaim_attempts = {1, 2, 3}
    emu.faults.spot_reclaim_job_name_glob = "doomed*"
    queue, jobdef = emu.create_queue_and_job_definition(
        command=["python3", "-c", SLEEP, "0.2"], retry_strategy=SPOT_RETRY
    )
    batch = emu.client("batch")
    doomed = batch.submit_job(jobName="doomed-1", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    spared = batch.submit_job(jobName="spared", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    job = wait_for_status(batch, doomed)
    assert job["status"] == "FAILED"
    assert job["statusReason"].startswith(StatusReason.SPOT_RECLAIM_PREFIX)
    assert len(job["attempts"]) == 3
    assert wait_for_status(batch, spared)["status"] == "SUCCEEDED"


def test_catch_all_exit_stops_retrying_an_application_failure(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        command=["python3", "-c", "raise SystemExit(2)"], retry_strategy=SPOT_RETRY
    )
    batch = emu.client("batch")
    job = wait_for_status(batch, batch.submit_job(jobName="app", jobQueue=queue, jobDefinition=jobdef)["jobId"])
    assert job["status"] == "FAILED"
    assert len(job["attempts"]) == 1
    assert job["container"]["exitCode"] == 2


def test_vanished_job_is_never_described_again(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "0"])
    batch = emu.client("batch")
    kept = batch.submit_job(jobName="kept", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    gone = batch.submit_job(jobName="gone", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    assert describe_job(batch, gone) is not None
    emu.faults.vanished_job_ids.add(gone)
    emu.faults.vanish_job_name_glob = "ghost-*"
    ghost = batch.submit_job(jobName="ghost-1", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    wait_for_status(batch, kept)
    wait_until(lambda: emu.job_status_counts()["SUCCEEDED"] == 3, "all three jobs to run")
    assert [j["jobId"] for j in batch.describe_jobs(jobs=[kept, gone, ghost])["jobs"]] == [kept]
    listed = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [kept]


def test_result_object_deleted_before_success_is_reported(emu: BatchEmulator) -> None:
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="results")
    writer = (
        "import boto3, os; s3 = boto3.client('s3'); job = os.environ['AWS_BATCH_JOB_ID'];"
        "s3.put_object(Bucket='results', Key=f'out/{job}.result', Body=b'r');"
        "s3.put_object(Bucket='results', Key=f'keep/{job}.log', Body=b'l')"
    )
    queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", writer])
    emu.faults.delete_on_success_globs = ["s3://results/out/{job_id}*"]
    hooked: list[JobInfo] = []
    emu.faults.on_success_hooks.append(lambda info, _s3: hooked.append(info))
    batch = emu.client("batch")
    job_id = batch.submit_job(jobName="writer", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    assert wait_for_status(batch, job_id)["status"] == "SUCCEEDED"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results").get("Contents", [])]
    assert keys == [f"keep/{job_id}.log"]
    assert [(h.job_id, h.attempt) for h in hooked] == [(job_id, 1)]


def test_injected_throttling_and_server_errors(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(command=["true"])
    batch = emu.client("batch", max_attempts=1)
    emu.faults.throttle_rate_by_api = {"DescribeJobs": 1.0}
    emu.faults.server_error_rate_by_api = {"SubmitJob": 1.0}
    with pytest.raises(ClientError) as exc:
        batch.describe_jobs(jobs=["x"])
    throttled: Any = exc.value.response
    assert (throttled["Error"]["Code"], throttled["ResponseMetadata"]["HTTPStatusCode"]) == (
        "TooManyRequestsException",
        429,
    )
    with pytest.raises(ClientError) as exc:
        batch.submit_job(jobName="x", jobQueue=queue, jobDefinition=jobdef)
    failed: Any = exc.value.response
    assert (failed["Error"]["Code"], failed["ResponseMetadata"]["HTTPStatusCode"]) == ("ServerException", 500)
    assert emu.job_status_counts()["SUBMITTED"] == 0  # the failed submit created nothing

    # An overall rate, seeded: the same seed gives the same sequence.
    emu.faults.throttle_rate_by_api = {}
    emu.faults.server_error_rate_by_api = {}
    emu.faults.throttle_rate = 0.5

    def outcomes() -> list[bool]:
        emu.faults.reseed(123)
        result = []
        for _ in range(30):
            try:
                batch.list_jobs(jobQueue=queue)
                result.append(True)
            except ClientError:
                result.append(False)
        return result

    first, second = outcomes(), outcomes()
    assert first == second
    assert 0 < first.count(False) < 30
    assert emu.api_calls.throttled["ListJobs"] == 2 * first.count(False)

    # botocore's own retries absorb occasional throttling.
    emu.faults.throttle_rate = 0.3
    retrying = emu.client("batch")
    assert retrying.describe_jobs(jobs=["x"])["jobs"] == []


def test_close_kills_job_processes() -> None:
    emu = BatchEmulator().start()
    try:
        script = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", script])
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName="long", jobQueue=queue, jobDefinition=jobdef)["jobId"]
        job = wait_for_status(batch, job_id, {"RUNNING"})
        logs = emu.client("logs")
        lines = wait_until(
            lambda: log_messages(logs, "/aws/batch/job", job["container"]["logStreamName"]), "the job's pid in its log"
        )
        pid = int(lines[0])
        assert emu.running_processes() == 1
    finally:
        emu.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_other_services_pass_through_to_moto(emu: BatchEmulator) -> None:
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="big")
    blob = os.urandom(9 * 1024 * 1024)
    s3.upload_file  # noqa: B018 - the managed transfer below uses multipart uploads
    s3.put_object(Bucket="big", Key="one", Body=blob)
    assert s3.get_object(Bucket="big", Key="one")["Body"].read() == blob
    s3.put_object(Bucket="big", Key="create-only", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="big", Key="create-only", Body=b"2", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    logs = emu.client("logs")
    logs.create_log_group(logGroupName="g")
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix="g")["logGroups"]] == ["g"]

    cfn = emu.client("cloudformation")
    template = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "from-cfn"}}}}
    cfn.create_stack(StackName="s", TemplateBody=json.dumps(template))
    assert cfn.describe_stacks(StackName="s")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert "from-cfn" in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    batch = emu.client("batch")
    queue, _ = emu.create_queue_and_job_definition()
    assert batch.describe_job_queues(jobQueues=[queue])["jobQueues"][0]["jobQueueName"] == "emulator-queue"
    assert emu.api_calls["DescribeJobQueues"] == 1


def test_queue_and_job_definition_from_cloudformation_run_jobs(emu: BatchEmulator) -> None:
    iam = emu.client("iam")
    role = iam.create_role(RoleName="svc", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    template = {
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "Subnet": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.0.0/24"}},
            "Sg": {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {"GroupDescription": "jobs", "VpcId": {"Ref": "Vpc"}},
            },
            "Ce": {
                "Type": "AWS::Batch::ComputeEnvironment",
                "Properties": {
                    "Type": "MANAGED",
                    "ServiceRole": role,
                    "ComputeEnvironmentName": "cfn-ce",
                    "ComputeResources": {
                        "Type": "FARGATE",
                        "MaxvCpus": 4,
                        "Subnets": [{"Ref": "Subnet"}],
                        "SecurityGroupIds": [{"Fn::GetAtt": ["Sg", "GroupId"]}],
                    },
                },
            },
            "Queue": {
                "Type": "AWS::Batch::JobQueue",
                "Properties": {
                    "JobQueueName": "cfn-queue",
                    "Priority": 1,
                    "ComputeEnvironmentOrder": [{"Order": 1, "ComputeEnvironment": {"Ref": "Ce"}}],
                },
            },
            "Def": {
                "Type": "AWS::Batch::JobDefinition",
                "Properties": {
                    "JobDefinitionName": "cfn-def",
                    "Type": "container",
                    "RetryStrategy": {"Attempts": 1},  # moto's CloudFormation needs it
                    "ContainerProperties": {
                        "Image": "img",
                        "Vcpus": 1,
                        "Memory": 512,
                        "Command": ["python3", "-c", "print('from cfn')"],
                    },
                },
            },
        }
    }
    cfn = emu.client("cloudformation")
    cfn.create_stack(StackName="batch", TemplateBody=json.dumps(template))
    batch = emu.client("batch")
    job_id = batch.submit_job(jobName="cfn", jobQueue="cfn-queue", jobDefinition="cfn-def")["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    assert log_messages(emu.client("logs"), "/aws/batch/job", job["container"]["logStreamName"]) == ["from cfn"]


def test_expired_credentials_are_refused_for_their_key_only_and_for_a_while(emu: BatchEmulator) -> None:
    import boto3

    def client(service: Literal["s3", "batch"], key: str) -> Any:
        return boto3.client(service, endpoint_url=emu.endpoint_url, region_name=emu.region, aws_access_key_id=key,
                            aws_secret_access_key=key)  # fmt: skip

    def s3_with(key: str) -> Any:
        return client("s3", key)

    emu.client("s3").create_bucket(Bucket="creds")
    emu.faults.expire_credentials("adapter", 60)
    requests: list[Callable[[], object]] = [
        lambda: s3_with("adapter").list_objects_v2(Bucket="creds"),
        lambda: client("batch", "adapter").list_jobs(jobQueue="q"),
    ]
    for request in requests:
        with pytest.raises(ClientError) as caught:
            request()
        assert caught.value.response["Error"]["Code"] in ("ExpiredToken", "ExpiredTokenException")
    assert s3_with("someone-else").list_objects_v2(Bucket="creds")["KeyCount"] == 0
    assert emu.api_calls.credential_errors == {"s3": 1, "batch": 1}
    emu.faults.expire_credentials("adapter", 0)
    assert s3_with("adapter").list_objects_v2(Bucket="creds")["KeyCount"] == 0


def test_s3_slow_down_and_server_error_bursts(emu: BatchEmulator) -> None:
    s3 = emu.client("s3", max_attempts=1)
    s3.create_bucket(Bucket="slow")
    emu.faults.s3_slow_down_rate = 1.0
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="slow", Key="k", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "SlowDown"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    emu.faults.s3_slow_down_rate = 0.0
    s3.put_object(Bucket="slow", Key="k", Body=b"x")
    batch = emu.client("batch", max_attempts=1)
    queue, _ = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "0"])
    emu.faults.burst_server_errors(60)
    with pytest.raises(ClientError) as burst:
        batch.list_jobs(jobQueue=queue)
    assert burst.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    emu.faults.burst_server_errors(0)
    assert batch.list_jobs(jobQueue=queue)["jobSummaryList"] == []


def test_a_slow_submit_job_lands_after_its_caller_hung_up(emu: BatchEmulator) -> None:
    """The SubmitJob a killed adapter had in flight: its caller gave up, the job is created all the same."""
    queue, jobdef = emu.create_queue_and_job_definition(command=["true"])
    emu.faults.submit_delay_seconds = 3.0
    impatient = boto3.session.Session().client(
        "batch", endpoint_url=emu.endpoint_url, region_name=emu.region, aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(read_timeout=0.5, retries={"total_max_attempts": 1}),
    )  # fmt: skip
    with pytest.raises(ReadTimeoutError):
        impatient.submit_job(jobName="in-flight", jobQueue=queue, jobDefinition=jobdef)
    batch = emu.client("batch")
    assert _names(batch, queue) == []  # not there yet
    wait_until(lambda: _names(batch, queue) == ["in-flight"], "the late job in ListJobs", timeout=30)


def test_list_jobs_lag_hides_young_jobs_but_describe_answers(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(command=["true"])
    batch = emu.client("batch")
    emu.faults.list_jobs_lag_seconds = 3.0
    job_id = batch.submit_job(jobName="young", jobQueue=queue, jobDefinition=jobdef)["jobId"]
    assert _names(batch, queue) == []
    assert [job["jobId"] for job in batch.describe_jobs(jobs=[job_id])["jobs"]] == [job_id]
    wait_until(lambda: _names(batch, queue) == ["young"], "the job in ListJobs", timeout=30)


def _names(batch: Any, queue: str) -> list[str]:
    name_filter = [{"name": "JOB_NAME", "values": ["*"]}]
    return [job["jobName"] for job in batch.list_jobs(jobQueue=queue, filters=name_filter)["jobSummaryList"]]
