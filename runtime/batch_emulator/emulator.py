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
import io
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import parse_qs, unquote

import boto3
import botocore.session
from botocore.config import Config

from batch_emulator import rules
from batch_emulator.config import ApiCalls, EmulatorConfig, Faults
from batch_emulator.container import secret_resolver
from batch_emulator.engine import Engine
from batch_emulator.rules import BatchApiError, client_error
from batch_emulator.s3_requests import S3Requests
from scaler_aws_batch.contracts import RUNNER_COMMAND

if TYPE_CHECKING:
    from mypy_boto3_batch import BatchClient
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_s3 import S3Client

LOG = logging.getLogger("batch_emulator")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

DUMMY_KEY = "testing"
DEFAULT_COMMAND = RUNNER_COMMAND

TAG_OPERATIONS = frozenset({"TagResource", "UntagResource", "ListTagsForResource"})
# Operations the emulator serves itself; every other request goes to moto.
JOB_OPERATIONS = frozenset(
    {
        "SubmitJob",
        "DescribeJobs",
        "ListJobs",
        "CancelJob",
        "TerminateJob",
        "CancelJobs",
        "TerminateJobs",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
    }
)


def _batch_routes() -> dict[tuple[str, str], str]:
    model = botocore.session.get_session().get_service_model("batch")
    routes: dict[tuple[str, str], str] = {}
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = str(http["requestUri"])
        if "{" not in uri:
            routes[(str(http["method"]), uri)] = name
    return routes


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class BatchEmulator:
    """AWS Batch on local processes, behind real HTTP, on top of moto. Use as a context manager."""

    def __init__(self, config: EmulatorConfig | None = None, faults: Faults | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.faults = faults or Faults()
        self.api_calls = ApiCalls()
        self.s3_requests = S3Requests()
        """S3 requests by requester (`jobs`, `clients`) and operation; `reset_api_calls` zeroes them too."""
        self.job_env: dict[str, str] = {}
        self._routes = _batch_routes()
        self._buckets: dict[str, _TokenBucket] = {}
        self._stats_lock = threading.Lock()
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

        moto_app = _ServiceRouter(DomainDispatcherApplication(create_backend_app))
        self._front = make_front_server(self.config.host, self.config.port, _FrontApp(self, moto_app))
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
        with self._stats_lock:
            self.api_calls.clear()
            self.api_calls.throttled.clear()
            self.api_calls.server_errors.clear()
            self.api_calls.credential_errors.clear()
            self.api_calls.s3_slow_downs = 0
            self.api_calls.max_describe_ids = 0
            self.api_calls.describe_ids_total = 0

    def job_status_counts(self) -> dict[str, int]:
        """Jobs by status (array children counted, array parents not), vanished ones included."""
        return self.engine.snapshot_status()

    def running_processes(self) -> int:
        """Job processes alive right now."""
        return self.engine.running_processes()

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

    def _create_managed_compute_environment(self, name: str, resource_type: str, service_role: str) -> str:
        """A managed compute environment at 0 vCPUs in a throwaway moto VPC (moto checks that its network exists)."""
        ec2 = self._moto_client("ec2")
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
            iam = self._moto_client("iam")
            profile = iam.create_instance_profile(InstanceProfileName=f"{name}-instance-profile")
            resources.update(minvCpus=0, instanceTypes=["m6i"], instanceRole=profile["InstanceProfile"]["Arn"])
        batch = self._moto_client("batch")
        created = batch.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state="ENABLED",
            serviceRole=service_role,
            computeResources=resources,
        )
        return str(created["computeEnvironmentArn"])

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
        iam = self._moto_client("iam")
        batch = self._moto_client("batch")
        logs = self._moto_client("logs")
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
            ce_arn = self._create_managed_compute_environment(compute_environment_name, compute_type, role_arn)
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
        return str(queue_arn), str(jobdef_arn)

    # ------------------------------------------------------------------ request accounting (used by _FrontApp)

    def _operation(self, environ: dict[str, Any]) -> str | None:
        """The Batch operation name of a request, or None when it is not a Batch request."""
        if _signed_service(environ) != "batch":
            return None
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if path.startswith("/v1/tags/"):
            return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method)
        return self._routes.get((method, path.rstrip("/")))

    def _admit(self, operation: str) -> BatchApiError | None:
        """Count the call; apply the TPS limit and injected faults."""
        with self._stats_lock:
            self.api_calls[operation] += 1
            rate = self.config.tps_limits.get(operation)
            if rate is not None and rate > 0:
                bucket = self._buckets.get(operation)
                if bucket is None or bucket.rate != rate:
                    bucket = self._buckets[operation] = _TokenBucket(rate)
                if not bucket.take():
                    self.api_calls.throttled[operation] += 1
                    return BatchApiError("TooManyRequestsException", rules.MSG_TOO_MANY_REQUESTS, 429)
        if operation not in JOB_OPERATIONS:
            return None
        faults = self.faults
        throttle = faults.throttle_rate_by_api.get(operation, faults.throttle_rate)
        if faults.draw(throttle):
            with self._stats_lock:
                self.api_calls.throttled[operation] += 1
            return BatchApiError("TooManyRequestsException", rules.MSG_TOO_MANY_REQUESTS, 429)
        server = faults.server_error_rate_by_api.get(operation, faults.server_error_rate)
        if time.monotonic() < faults.server_errors_until or faults.draw(server):
            with self._stats_lock:
                self.api_calls.server_errors[operation] += 1
            return BatchApiError("ServerException", "Internal Server Error (injected)", 500)
        return None

    def _credential_or_s3_fault(self, environ: dict[str, Any]) -> Callable[[StartResponse], list[bytes]] | None:
        """Expired credentials (any service, by access key id) and S3 SlowDown, decided from the SigV4 scope."""
        auth = str(environ.get("HTTP_AUTHORIZATION", ""))
        try:
            scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
            access_key, service = scope[0], scope[3]
        except IndexError:
            return None
        if self.faults.credentials_expired(access_key):
            with self._stats_lock:
                self.api_calls.credential_errors[service] += 1
            if service == "s3":
                return lambda start: _s3_error_response(start, 400, "ExpiredToken", "The provided token has expired.")
            error = BatchApiError("ExpiredTokenException", "The security token included in the request is expired", 403)
            return lambda start: _error_response(start, error)
        if service == "s3" and self.faults.draw(self.faults.s3_slow_down_rate):
            with self._stats_lock:
                self.api_calls.s3_slow_downs += 1
            return lambda start: _s3_error_response(start, 503, "SlowDown", "Please reduce your request rate.")
        return None

    def _record_describe(self, count: int) -> None:
        with self._stats_lock:
            self.api_calls.max_describe_ids = max(self.api_calls.max_describe_ids, count)
            self.api_calls.describe_ids_total += count


def _signed_service(environ: dict[str, Any]) -> str | None:
    """The service of the request's SigV4 credential scope `<key>/<date>/<region>/<service>/aws4_request`."""
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    try:
        return auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")[3]
    except IndexError:
        return None


#: Services whose moto app follows from the signing scope's service name alone (no host, target or path rules).
_ROUTED_BY_SERVICE = frozenset({"s3", "logs", "secretsmanager", "batch", "cloudformation", "sts", "iam", "sqs",
                                "events", "ecs", "ec2", "ecr"})  # fmt: skip


class _ServiceRouter:
    """moto's dispatcher finds each request's app under one lock, trying host patterns before the signature: about a
    fifth of the emulator's CPU when jobs hammer S3. The app of a signed request to these services depends on the
    service alone, so it is looked up once per service."""

    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher
        self._apps: dict[str, WsgiApp] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        service = _signed_service(environ)
        if service not in _ROUTED_BY_SERVICE:
            return self._dispatcher(environ, start_response)  # type: ignore[no-any-return]
        app = self._apps.get(service)
        if app is None:
            app = self._apps[service] = self._dispatcher.get_application(environ)
        return app(environ, start_response)


class _FrontApp:
    """WSGI app of the front server: Batch job APIs here, everything else to moto."""

    def __init__(self, emulator: BatchEmulator, moto_app: WsgiApp) -> None:
        self._emu = emulator
        self._moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        fault = self._emu._credential_or_s3_fault(environ)
        if fault is not None:
            return fault(start_response)
        operation = self._emu._operation(environ)
        if operation is None:
            if _signed_service(environ) == "s3":
                self._emu.s3_requests.record(environ)
            return self._moto_app(environ, start_response)
        body = _read_body(environ)
        error = self._emu._admit(operation)
        if error is not None:
            return _error_response(start_response, error)
        path = unquote(str(environ.get("PATH_INFO", "")))
        served = operation in JOB_OPERATIONS and (operation not in TAG_OPERATIONS or ":job/" in path)
        if not served:
            if operation == "RegisterJobDefinition":
                try:
                    _validate_job_definition(body)
                except BatchApiError as exc:
                    return _error_response(start_response, exc)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            return self._moto_app(environ, start_response)
        try:
            result = self._handle(operation, environ, body)
        except BatchApiError as exc:
            return _error_response(start_response, exc)
        payload = json.dumps(result).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ],
        )
        return [payload]

    def _handle(self, operation: str, environ: dict[str, Any], body: bytes) -> dict[str, Any]:
        engine = self._emu.engine
        if operation == "SubmitJob" and len(body) > rules.SUBMIT_JOB_MAX_BYTES:
            raise client_error(rules.MSG_JOB_TOO_BIG)
        req = _parse_json(body)
        if operation == "SubmitJob":
            return engine.submit(req)
        if operation == "DescribeJobs":
            ids = req.get("jobs")
            if not isinstance(ids, list):
                raise client_error("jobs is required")
            self._emu._record_describe(len(ids))
            if len(ids) > rules.DESCRIBE_JOBS_MAX_IDS:
                raise client_error(rules.MSG_TOO_MANY_IDS)
            return {"jobs": engine.describe([str(i) for i in ids])}
        if operation == "ListJobs":
            return _list_jobs(engine, req)
        if operation in ("CancelJob", "TerminateJob"):
            job_id = req.get("jobId")
            reason = req.get("reason")
            if not isinstance(job_id, str) or not isinstance(reason, str):
                raise client_error("jobId and reason are required")
            if len(reason) > 1024:
                raise client_error("reason can be at most 1024 characters")
            (engine.cancel if operation == "CancelJob" else engine.terminate)(job_id, reason)
            return {}
        if operation in ("CancelJobs", "TerminateJobs"):
            ids = req.get("jobs")
            reason = req.get("reason")
            if not isinstance(ids, list) or not isinstance(reason, str):
                raise client_error("jobs and reason are required")
            if len(ids) > rules.BULK_JOBS_MAX_IDS:
                raise client_error(f"Maximum number of jobs supported is {rules.BULK_JOBS_MAX_IDS}")
            for job_id in ids:
                (engine.cancel if operation == "CancelJobs" else engine.terminate)(str(job_id), reason)
            return {"successful": [str(i) for i in ids], "errors": []}
        # tagging of job ARNs
        arn = unquote(str(environ.get("PATH_INFO", ""))[len("/v1/tags/") :])
        job = engine.job_for_arn(arn)
        if job is None:
            raise client_error(f"Resource {arn} not found")
        with engine.lock:
            if operation == "ListTagsForResource":
                return {"tags": dict(job.tags)}
            if operation == "TagResource":
                job.tags.update({str(k): str(v) for k, v in (req.get("tags") or {}).items()})
                return {}
            keys = parse_qs(str(environ.get("QUERY_STRING", ""))).get("tagKeys", [])
            for key in keys:
                job.tags.pop(key, None)
            return {}


def _list_jobs(engine: Engine, req: dict[str, Any]) -> dict[str, Any]:
    max_results = req.get("maxResults") or 100
    if not isinstance(max_results, int) or not 1 <= max_results <= 1000:
        raise client_error("maxResults must be between 1 and 1000")
    token = req.get("nextToken")
    offset = 0
    if token:
        try:
            offset = int(str(token).removeprefix("emu-"))
        except ValueError as exc:
            raise client_error("nextToken is not valid") from exc
    summaries, total = engine.list_jobs(req)
    page = summaries[offset : offset + max_results]
    out: dict[str, Any] = {"jobSummaryList": page}
    if offset + max_results < total:
        out["nextToken"] = f"emu-{offset + max_results}"
    return out


def _validate_job_definition(body: bytes) -> None:
    if len(body) > rules.JOB_DEFINITION_MAX_BYTES:
        raise client_error("Job definition size must be less than 24 KiB")
    req = _parse_json(body)
    rules.validate_timeout(req.get("timeout"))
    rules.validate_retry_strategy(req.get("retryStrategy"))
    if rules.is_fargate(req):
        rules.validate_fargate_resources((req.get("containerProperties") or {}).get("resourceRequirements") or [])


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    data: bytes = stream.read(length) if length > 0 else b""
    return data


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise client_error(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise client_error("Request body must be a JSON object")
    return value


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Slow Down",
}


def _s3_error_response(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
    payload = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>{uuid.uuid4()}</RequestId></Error>"
    ).encode()
    start_response(
        f"{status} {_REASONS.get(status, 'Error')}",
        [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def _error_response(start_response: StartResponse, error: BatchApiError) -> list[bytes]:
    payload = json.dumps({"__type": error.code, "message": error.message}).encode()
    start_response(
        f"{error.status} {_REASONS.get(error.status, 'Error')}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-ErrorType", error.code),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [payload]
