"""`BatchEmulator`: one HTTP endpoint for S3, CloudWatch Logs, CloudFormation, IAM, EC2 and AWS Batch.

Design
------
Two real HTTP servers on 127.0.0.1, random ports, both in this process:

* moto's `ThreadedMotoServer` (the "moto endpoint"): plain moto, used by the emulator itself to read job queues and
  job definitions and delete S3 objects for fault injection (job logs go through the front server).
* the front server (the public `endpoint_url`, a threaded HTTP/1.1 server that keeps connections alive, see
  `front_server`): a WSGI app that serves the Batch *job* APIs itself (SubmitJob, DescribeJobs, ListJobs,
  CancelJob(s), TerminateJob(s), tagging of job ARNs) and hands every other request, unchanged, to moto's own
  WSGI dispatcher (`DomainDispatcherApplication`, the app that `ThreadedMotoServer` runs) in-process.

Handing the WSGI environ to moto's app in-process, rather than re-sending it over a second HTTP hop, preserves
request bodies, headers (including SigV4 `Authorization`, which moto routes on), streaming S3 bodies, chunked
encoding and `Expect: 100-continue` exactly, with no proxy code to get wrong; moto's state is process-global, so
both servers see the same resources (queues and job definitions created by moto's CloudFormation included).

Routing: botocore signs every request with a SigV4 credential scope `<key>/<date>/<region>/<service>/aws4_request`;
Batch is REST-JSON under `/v1/<operation>` (and `/v1/tags/<arn>`), S3 uses path-style URLs on a custom endpoint,
and Logs is JSON 1.1 with `X-Amz-Target`. The front app takes a request when the scope's service is `batch`.

moto's state is global to the process: run one emulator at a time per process (it resets moto when it starts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

from batch_emulator import rules
from batch_emulator.config import ApiCalls, EmulatorConfig, Faults
from batch_emulator.container import secret_resolver
from batch_emulator.engine import Engine
from batch_emulator.front_app import FrontApp, RequestGate, ServiceRouter
from batch_emulator.s3_requests import S3Requests
from scaler_aws_batch.contracts import RUNNER_COMMAND

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_s3 import S3Client

LOG = logging.getLogger("batch_emulator")

DUMMY_KEY = "testing"
DEFAULT_COMMAND = RUNNER_COMMAND


class BatchEmulator:
    """AWS Batch on local processes, behind real HTTP, on top of moto. Use as a context manager."""

    def __init__(self, config: EmulatorConfig | None = None, faults: Faults | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.faults = faults or Faults()
        self.api_calls = ApiCalls()
        self.s3_requests = S3Requests()
        """S3 requests by requester (`jobs`, `clients`) and operation; `reset_api_calls` zeroes them too."""
        self.job_env: dict[str, str] = {}
        self._gate = RequestGate(self.config, self.faults, self.api_calls)
        self._moto: Any = None
        self._front: Any = None
        self._front_thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._endpoint_url = ""
        self._moto_url = ""
        self._own_work_dir: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> BatchEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> BatchEmulator:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from moto.server import ThreadedMotoServer

        from batch_emulator.front_server import make_front_server

        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)  # one line per request otherwise

        self._moto = ThreadedMotoServer(ip_address=self.config.host, port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self._moto_url = f"http://{host}:{port}"
        if self.config.reset_moto_on_start:
            self._reset_moto()

        moto_app = ServiceRouter(DomainDispatcherApplication(create_backend_app))
        front_app = FrontApp(self._gate, self.s3_requests, lambda: self.engine, moto_app)
        self._front = make_front_server(self.config.host, self.config.port, front_app)
        self._endpoint_url = f"http://{self.config.host}:{self._front.server_port}"
        self._front_thread = threading.Thread(
            target=self._front.serve_forever, kwargs={"poll_interval": 0.05}, name="batch-emulator-front", daemon=True
        )
        self._front_thread.start()

        work_dir = self.config.work_dir
        if work_dir is None:
            work_dir = self._own_work_dir = tempfile.mkdtemp(prefix="batch-emulator-")
        self._engine = Engine(
            config=self.config,
            faults=self.faults,
            job_env=self.job_env,
            endpoint_url=lambda: self._endpoint_url,
            batch=self._moto_client("batch"),
            s3=self._moto_client("s3"),
            work_dir=work_dir,
            resolve_secret=secret_resolver(self._moto_client("secretsmanager"), self._moto_client("ssm")),
        )
        return self

    def close(self) -> None:
        """Kill every job process (its whole process group) and stop both servers."""
        if self._closed:
            return
        self._closed = True
        if self._engine is not None:
            self._engine.close()
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        if self._front_thread is not None:
            self._front_thread.join(timeout=5)
        if self._moto is not None:
            if self.config.reset_moto_on_start:
                self._reset_moto()
            self._moto.stop()
        if self._own_work_dir is not None:
            shutil.rmtree(self._own_work_dir, ignore_errors=True)

    def _reset_moto(self) -> None:
        import urllib.request

        with urllib.request.urlopen(
            urllib.request.Request(f"{self._moto_url}/moto-api/reset", method="POST"), timeout=30
        ) as response:
            response.read()

    # ------------------------------------------------------------------ public properties

    @property
    def endpoint_url(self) -> str:
        """The one URL for every service (boto3 `endpoint_url`, or `AWS_ENDPOINT_URL`)."""
        return self._endpoint_url

    @property
    def moto_endpoint_url(self) -> str:
        """Plain moto (no Batch job emulation); for debugging."""
        return self._moto_url

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("BatchEmulator is not started")
        return self._engine

    def reset_api_calls(self) -> None:
        """Zero `api_calls` (counts, throttled, server errors, describe sizes)."""
        self.s3_requests.clear()
        self._gate.reset()

    def job_status_counts(self) -> dict[str, int]:
        """Jobs by status (array children counted, array parents not), vanished ones included."""
        return self.engine.snapshot_status()

    def running_processes(self) -> int:
        """Job processes alive right now."""
        return self.engine.running_processes()

    def set_max_running_jobs(self, count: int) -> None:
        """How many jobs run at once from now on; 0 holds every new job in RUNNABLE until it is raised again."""
        self.engine.set_max_running_jobs(count)

    # ------------------------------------------------------------------ clients

    @overload
    def client(self, service: Literal["batch"], *, max_attempts: int | None = None) -> BatchClient: ...
    @overload
    def client(self, service: Literal["s3"], *, max_attempts: int | None = None) -> S3Client: ...
    @overload
    def client(self, service: Literal["logs"], *, max_attempts: int | None = None) -> CloudWatchLogsClient: ...
    @overload
    def client(
        self, service: Literal["cloudformation"], *, max_attempts: int | None = None
    ) -> CloudFormationClient: ...
    @overload
    def client(self, service: str, *, max_attempts: int | None = None) -> Any: ...
    def client(self, service: str, *, max_attempts: int | None = None) -> Any:
        """A boto3 client on the emulator with dummy credentials. `max_attempts=1` disables botocore's retries."""
        return self._make_client(service, self._endpoint_url, max_attempts)

    def _moto_client(self, service: str) -> Any:
        return self._make_client(service, self._moto_url, None)

    def _make_client(self, service: str, url: str, max_attempts: int | None) -> Any:
        retries: dict[str, Any] = {"mode": "standard"}
        if max_attempts is not None:
            retries["total_max_attempts"] = max_attempts
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=url,
            region_name=self.config.region,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
            config=Config(retries=retries, max_pool_connections=50),  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ convenience for tests

    def _batch_service_role(self) -> str:
        """The ARN of the Batch service role the emulator's compute environments name (created once)."""
        iam = self._moto_client("iam")
        role_name = "emulator-batch-service-role"
        try:
            role_arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role_arn = iam.create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "batch.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                ),
            )["Role"]["Arn"]
        return str(role_arn)

    def _queue_on_compute_environment(
        self, queue_name: str, compute_environment_name: str, compute_type: str, role_arn: str
    ) -> str:
        """The job queue's ARN, on its compute environment; both are reused when they exist."""
        batch = self._moto_client("batch")
        envs = batch.describe_compute_environments(computeEnvironments=[compute_environment_name])
        if envs["computeEnvironments"]:
            ce_arn = envs["computeEnvironments"][0]["computeEnvironmentArn"]
        elif compute_type == "UNMANAGED":
            ce_arn = batch.create_compute_environment(
                computeEnvironmentName=compute_environment_name,
                type="UNMANAGED",
                state="ENABLED",
                serviceRole=role_arn,
            )["computeEnvironmentArn"]
        else:
            ce_arn = _create_managed_compute_environment(
                self._moto_client, compute_environment_name, compute_type, role_arn
            )
        queues = batch.describe_job_queues(jobQueues=[queue_name])["jobQueues"]
        if queues:
            queue_arn = queues[0]["jobQueueArn"]
        else:
            queue_arn = batch.create_job_queue(
                jobQueueName=queue_name,
                state="ENABLED",
                priority=1,
                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce_arn}],
            )["jobQueueArn"]
        return str(queue_arn)

    def create_queue_and_job_definition(
        self,
        *,
        queue_name: str = "emulator-queue",
        job_definition_name: str = "emulator-job",
        compute_environment_name: str = "emulator-ce",
        command: list[str] | None = None,
        environment: dict[str, str] | None = None,
        parameters: dict[str, str] | None = None,
        retry_strategy: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
        log_group: str = "/aws/batch/job",
        image: str = "scaler-aws-batch:emulated",
        compute_type: str = "UNMANAGED",
        fargate: bool = False,
        container_properties: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Create (in moto) a service role, a compute environment, a job queue, a job definition running
        `command` (default `scaler-batch run-job --payload Ref::payload`) and its log group.
        `compute_type` UNMANAGED, or a managed environment's resource type: EC2, SPOT, FARGATE or FARGATE_SPOT
        (at 0 vCPUs; DescribeJobs then names its ECS cluster in task ARNs, as AWS does). ``fargate`` makes the job
        definition a Fargate one (1 vCPU, 2048 MiB), whose jobs the emulator holds to Fargate's sizes.
        ``container_properties`` adds to (or replaces) the job definition's container properties, e.g. the CDK stack's
        ``readonlyRootFilesystem``, ``volumes`` and ``mountPoints`` for container execution.
        Returns (job queue ARN, job definition ARN). Reuses the compute environment and queue if they exist."""
        rules.validate_timeout({"attemptDurationSeconds": timeout_seconds} if timeout_seconds is not None else None)
        rules.validate_retry_strategy(retry_strategy)
        batch = self._moto_client("batch")
        logs = self._moto_client("logs")
        role_arn = self._batch_service_role()
        queue_arn = self._queue_on_compute_environment(queue_name, compute_environment_name, compute_type, role_arn)
        container: dict[str, Any] = {
            "image": image,
            "command": list(command) if command is not None else list(DEFAULT_COMMAND),
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
            "environment": [{"name": k, "value": v} for k, v in (environment or {}).items()],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": log_group}},
            **(container_properties or {}),
        }
        kwargs: dict[str, Any] = {
            "jobDefinitionName": job_definition_name,
            "type": "container",
            "containerProperties": container,
            "parameters": parameters or {},
        }
        if fargate:
            kwargs["platformCapabilities"] = [rules.FARGATE]
            container["networkConfiguration"] = {"assignPublicIp": "DISABLED"}
            container["executionRoleArn"] = role_arn
        if retry_strategy is not None:
            kwargs["retryStrategy"] = retry_strategy
        if timeout_seconds is not None:
            kwargs["timeout"] = {"attemptDurationSeconds": timeout_seconds}
        jobdef_arn = batch.register_job_definition(**kwargs)["jobDefinitionArn"]
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=log_group)
        return queue_arn, str(jobdef_arn)


def _create_managed_compute_environment(
    moto_client: Callable[[str], Any], name: str, resource_type: str, service_role: str
) -> str:
    """A managed compute environment at 0 vCPUs in a throwaway moto VPC (moto checks that its network exists)."""
    ec2 = moto_client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.99.0.0/20")["Subnet"]["SubnetId"]
    group_id = ec2.create_security_group(GroupName=f"{name}-sg", Description=name, VpcId=vpc_id)["GroupId"]
    resources: dict[str, Any] = {
        "type": resource_type,
        "maxvCpus": 256,
        "subnets": [subnet_id],
        "securityGroupIds": [group_id],
    }
    if not resource_type.startswith("FARGATE"):
        iam = moto_client("iam")
        profile = iam.create_instance_profile(InstanceProfileName=f"{name}-instance-profile")
        resources.update(minvCpus=0, instanceTypes=["m6i"], instanceRole=profile["InstanceProfile"]["Arn"])
    batch = moto_client("batch")
    created = batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        state="ENABLED",
        serviceRole=service_role,
        computeResources=resources,
    )
    return str(created["computeEnvironmentArn"])
