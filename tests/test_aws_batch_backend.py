"""AwsBatchBackend against moto in server mode, over real HTTP.

moto neither runs jobs nor enforces AWS limits or throttling, so error answers (429, 5xx, credential errors) come from
``FakeAwsEndpoint``: a real HTTP server on 127.0.0.1 that answers scripted AWS errors first and forwards every other
request to moto. Nothing in scaler_aws_batch is mocked. Time is injected (fake clock and sleep), so the tests assert
counts and states, never wall-clock durations.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

try:
    import batch_emulator

    HAVE_EMULATOR = True
except ImportError:  # another engineer's package; the moto tests still run without it
    HAVE_EMULATOR = False

from scaler_aws_batch.aws_calls import (
    AwsAccessDeniedError,
    AwsCredentialsError,
    AwsRetriesExhaustedError,
    BackoffPolicy,
    TokenBucket,
)
from scaler_aws_batch.backends.aws_batch.backend import AwsBatchBackend
from scaler_aws_batch.backends.base import RUNNER_COMMAND, JobSpec, JobState
from scaler_aws_batch.contracts import StatusReason
from scaler_aws_batch.errors import JobRejectedError
from scaler_aws_batch.resources import Resources

REGION = "us-east-1"
ACCOUNT_ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


# ---------------------------------------------------------------------------------------------------- fakes


class FakeClock:
    """A clock whose ``sleep`` advances time instantly and records every pause."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


class FrozenClock(FakeClock):
    """A clock that never moves: sleeping only records the pause."""

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)


@dataclasses.dataclass
class ScriptedError:
    status: int
    code: str
    message: str = "scripted by the test"


class FakeAwsEndpoint:
    """A real HTTP server answering scripted AWS errors per request path, then forwarding to ``upstream`` (moto)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.script: dict[str, list[ScriptedError]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with endpoint._lock:
                    endpoint.requests.append((self.path, json.loads(body) if body else {}))
                    queue = endpoint.script.get(self.path, [])
                    scripted = queue.pop(0) if queue else None
                if scripted is not None:
                    payload = json.dumps({"__type": scripted.code, "message": scripted.message}).encode()
                    self.send_response(scripted.status)
                    self.send_header("x-amzn-ErrorType", scripted.code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(endpoint.upstream, timeout=30)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, path: str, *errors: ScriptedError) -> None:
        with self._lock:
            self.script.setdefault(path, []).extend(errors)

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for request_path, body in self.requests if request_path == path]

    def __enter__(self) -> FakeAwsEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# ---------------------------------------------------------------------------------------------------- fixtures


def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _configure_moto(url: str) -> None:
    """Make moto finish jobs without Docker. moto's configuration is process-global, so set it for every test."""
    request = urllib.request.Request(
        f"{url}/moto-api/config", data=json.dumps({"batch": {"use_docker": False}}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


@dataclasses.dataclass(frozen=True)
class BatchWorld:
    url: str
    queue: str
    queue_arn: str
    job_definition: str
    job_definition_arn: str


@pytest.fixture
def world(moto_url: str) -> BatchWorld:
    """A fresh queue and job definition (unique names) in the module's moto server."""
    _configure_moto(moto_url)
    suffix = uuid.uuid4().hex[:8]
    session = _session()
    iam = session.client("iam", endpoint_url=moto_url)
    role_arn = iam.create_role(RoleName=f"batch-{suffix}", AssumeRolePolicyDocument=ACCOUNT_ROLE_POLICY)["Role"]["Arn"]
    batch = session.client("batch", endpoint_url=moto_url)
    environment_arn = batch.create_compute_environment(
        computeEnvironmentName=f"env-{suffix}", type="UNMANAGED", state="ENABLED", serviceRole=role_arn
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=f"queue-{suffix}",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment_arn}],
    )
    definition = batch.register_job_definition(
        jobDefinitionName=f"runner-{suffix}",
        type="container",
        parameters={"payload": "none", "mode": "fast"},
        containerProperties={
            "image": "scaler-batch:test",
            "command": list(RUNNER_COMMAND),
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        },
    )
    return BatchWorld(
        url=moto_url,
        queue=queue["jobQueueName"],
        queue_arn=queue["jobQueueArn"],
        job_definition=definition["jobDefinitionName"],
        job_definition_arn=definition["jobDefinitionArn"],
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _backend(world: BatchWorld, clock: FakeClock, *, endpoint_url: str | None = None, **kwargs: Any) -> AwsBatchBackend:
    options: dict[str, Any] = {
        "job_queue": world.queue,
        "job_definition": world.job_definition,
        "region": REGION,
        "endpoint_url": endpoint_url or world.url,
        "session": _session(),
        "botocore_max_retries": 0,
        "clock": clock,
        "sleep": clock.sleep,
        "rng": random.Random(7),
    }
    options.update(kwargs)
    return AwsBatchBackend(**options)


def _spec(name: str = "task-1", **kwargs: Any) -> JobSpec:
    options: dict[str, Any] = {
        "name": name,
        "payload": "cGF5bG9hZA==",
        "resources": Resources(),
        "timeout_seconds": 300,
        "tags": {"scaler-batch:adapter": "test"},
    }
    options.update(kwargs)
    return JobSpec(**options)


# ---------------------------------------------------------------------------------------------------- submit


def test_submit_single_job_sends_the_expected_request(world: BatchWorld, clock: FakeClock) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        spec = _spec(
            "single-1",
            resources=Resources(vcpus=2, memory_mib=4096, gpus=1),
            timeout_seconds=10,
            tags={"owner": "tests", "run": "r1"},
        )
        job_id = backend.submit(spec)
        backend.close()

        (request,) = endpoint.bodies("/v1/submitjob")
    assert request == {
        "jobName": "single-1",
        "jobQueue": world.queue,
        "jobDefinition": world.job_definition,
        "parameters": {"payload": "cGF5bG9hZA=="},
        "containerOverrides": {
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "4096"},
                {"type": "GPU", "value": "1"},
            ]
        },
        "timeout": {"attemptDurationSeconds": 60},  # clamped up to AWS's minimum
        "tags": {"owner": "tests", "run": "r1"},
        "propagateTags": False,
    }
    assert backend.api_calls["SubmitJob"] == 1

    described = _session().client("batch", endpoint_url=world.url).describe_jobs(jobs=[job_id])["jobs"][0]
    assert described["jobName"] == "single-1"
    assert described["tags"] == {"owner": "tests", "run": "r1"}
    assert described["timeout"] == {"attemptDurationSeconds": 60}


def test_submit_array_job_on_another_queue_and_describe_parent_and_children(
    world: BatchWorld, clock: FakeClock
) -> None:
    backend = _backend(world, clock, job_queue="queue-that-is-not-used")
    parent_id = backend.submit(_spec("array-1", array_size=3, queue=world.queue_arn, timeout_seconds=900))

    statuses = backend.describe([parent_id, f"{parent_id}:0", f"{parent_id}:2", "no-such-job"])

    assert set(statuses) == {parent_id, f"{parent_id}:0", f"{parent_id}:2"}  # the unknown id is left out
    parent = statuses[parent_id]
    assert parent.state is JobState.SUCCEEDED  # moto without Docker finishes every job at once
    assert parent.array_summary is not None
    assert parent.array_summary[JobState.SUCCEEDED] == 3
    assert parent.array_summary[JobState.FAILED] == 0
    child = statuses[f"{parent_id}:0"]
    assert child.state is JobState.SUCCEEDED
    assert child.array_summary is None
    assert child.attempts == 1
    assert child.log_location  # the CloudWatch stream name
    # The job definition is read once (its command and platform), then only SubmitJob and one DescribeJobs.
    assert backend.api_calls == {"DescribeJobDefinitions": 1, "SubmitJob": 1, "DescribeJobs": 1}
    raw = _session().client("batch", endpoint_url=world.url).describe_jobs(jobs=[parent_id])["jobs"][0]
    assert raw["arrayProperties"]["size"] == 3
    assert raw["timeout"] == {"attemptDurationSeconds": 900}


def test_missing_queue_is_rejected_with_a_message_naming_the_queue(world: BatchWorld, clock: FakeClock) -> None:
    backend = _backend(world, clock, job_queue="queue-does-not-exist")
    with pytest.raises(JobRejectedError, match=r"queue-does-not-exist.*--job-queue"):
        backend.submit(_spec())


def test_untagged_job_and_rejection_messages_never_carry_the_payload(world: BatchWorld, clock: FakeClock) -> None:
    secret = "c2VjcmV0LXRhc2stZGF0YQ=="
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/submitjob", ScriptedError(400, "ClientException", f"Value '{secret}' failed a constraint"))
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        with pytest.raises(JobRejectedError) as caught:
            backend.submit(_spec(payload=secret))
        backend.submit(_spec("untagged", tags={}))
        bodies = endpoint.bodies("/v1/submitjob")
    assert secret not in str(caught.value)
    assert "<payload>" in str(caught.value)
    assert "tags" not in bodies[-1]


def test_missing_job_definition_is_rejected_naming_the_flag(world: BatchWorld, clock: FakeClock) -> None:
    backend = _backend(world, clock, job_definition="no-such-definition")
    with pytest.raises(JobRejectedError, match=r"no-such-definition.*--job-definition"):
        backend.submit(_spec())
    with pytest.raises(JobRejectedError, match=r"no-such-definition.*--job-definition"):
        backend.overrides_length(_spec())


# ---------------------------------------------------------------------------------------------------- describe


def test_describe_refuses_more_than_100_ids_without_calling_aws(world: BatchWorld, clock: FakeClock) -> None:
    backend = _backend(world, clock)
    with pytest.raises(ValueError, match="at most 100"):
        backend.describe([f"job-{index}" for index in range(101)])
    assert backend.describe([]) == {}
    assert backend.api_calls["DescribeJobs"] == 0
    assert backend.describe(["job-1"] * 150) == {}  # duplicates collapse to one id
    assert backend.api_calls["DescribeJobs"] == 1


# ---------------------------------------------------------------------------------------------------- cancel


@pytest.mark.parametrize(
    ("state", "expected_calls"),
    [
        (None, {"CancelJob": 1, "TerminateJob": 1}),
        (JobState.RUNNABLE, {"CancelJob": 1, "TerminateJob": 1}),
        (JobState.RUNNING, {"TerminateJob": 1}),
        (JobState.STARTING, {"TerminateJob": 1}),
        (JobState.SUCCEEDED, {}),
    ],
)
def test_cancel_uses_cancel_then_terminate_by_state(
    world: BatchWorld, clock: FakeClock, state: JobState | None, expected_calls: dict[str, int]
) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        job_id = backend.submit(_spec())
        backend.cancel(job_id, state, "user cancelled")
        cancel_bodies = endpoint.bodies("/v1/canceljob") + endpoint.bodies("/v1/terminatejob")
    submit_calls = ("SubmitJob", "DescribeJobDefinitions")  # submit reads the job definition once
    calls = {operation: count for operation, count in backend.api_calls.items() if operation not in submit_calls}
    assert calls == expected_calls
    assert all(body == {"jobId": job_id, "reason": "user cancelled"} for body in cancel_bodies)


def test_cancel_tolerates_a_job_that_finished_meanwhile(world: BatchWorld, clock: FakeClock) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        job_id = backend.submit(_spec())  # moto marks it SUCCEEDED at once
        endpoint.fail("/v1/terminatejob", ScriptedError(400, "ClientException", "job is not running"))
        backend.cancel(job_id, JobState.RUNNING, "deadline passed")
    assert backend.api_calls["TerminateJob"] == 1
    assert backend.api_calls["DescribeJobs"] == 1  # looked the job up, found it ended, did not raise


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (403, "UnrecognizedClientException", AwsCredentialsError),
        (400, "ExpiredTokenException", AwsCredentialsError),
        (403, "InvalidClientTokenId", AwsCredentialsError),
        (403, "AccessDeniedException", AwsAccessDeniedError),
    ],
)
def test_credential_errors_are_classified_by_code(
    world: BatchWorld, clock: FakeClock, status: int, code: str, error_type: type[Exception]
) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/submitjob", *[ScriptedError(status, code, "opaque text")] * 2)
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        with pytest.raises(error_type, match=code) as caught:
            backend.submit(_spec())
    assert isinstance(caught.value.__cause__, Exception)  # raised "from" the ClientError
    if error_type is AwsAccessDeniedError:
        assert backend.api_calls["SubmitJob"] == 1  # a missing permission is not retried
    else:  # the clients are rebuilt from the credential chain once, then the error is raised
        assert backend.api_calls["SubmitJob"] == 2
        assert backend.calls.credential_refreshes == 1


def test_message_text_never_decides_the_error_type(world: BatchWorld, clock: FakeClock) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/submitjob", ScriptedError(400, "ClientException", "The security token has expired"))
        backend = _backend(world, clock, endpoint_url=endpoint.url)
        with pytest.raises(JobRejectedError) as caught:
            backend.submit(_spec())
    assert not isinstance(caught.value, AwsCredentialsError)


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "TooManyRequestsException"), (500, "ServerException"), (400, "ThrottlingException"), (503, "")],
)
def test_throttling_and_server_errors_back_off_then_succeed(
    world: BatchWorld, clock: FakeClock, status: int, code: str
) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/describejobs", *[ScriptedError(status, code)] * 3)
        backend = _backend(world, clock, endpoint_url=endpoint.url, backoff=BackoffPolicy(max_attempts=5))
        job_id = backend.submit(_spec())
        statuses = backend.describe([job_id])
        describe_requests = endpoint.paths().count("/v1/describejobs")
    assert statuses[job_id].state is JobState.SUCCEEDED
    assert describe_requests == 4
    assert backend.api_calls["DescribeJobs"] == 4
    assert backend.retried_calls["DescribeJobs"] == 3
    # full jitter: retry n sleeps somewhere in [0, base * 2**n]
    assert len(clock.sleeps) == 3
    assert all(0 <= pause <= 0.5 * 2**number for number, pause in enumerate(clock.sleeps))


def test_throttling_gives_up_after_bounded_attempts(world: BatchWorld, clock: FakeClock) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/submitjob", *[ScriptedError(429, "TooManyRequestsException")] * 10)
        backend = _backend(world, clock, endpoint_url=endpoint.url, backoff=BackoffPolicy(max_attempts=3))
        with pytest.raises(AwsRetriesExhaustedError, match=r"SubmitJob.*3 attempts"):
            backend.submit(_spec())
        submit_requests = endpoint.paths().count("/v1/submitjob")
    assert submit_requests == 3
    assert backend.api_calls["SubmitJob"] == 3


def test_botocore_standard_retries_stack_under_our_backoff(world: BatchWorld, clock: FakeClock) -> None:
    with FakeAwsEndpoint(world.url) as endpoint:
        endpoint.fail("/v1/submitjob", *[ScriptedError(429, "TooManyRequestsException")] * 2)
        backend = _backend(
            world, clock, endpoint_url=endpoint.url, botocore_max_retries=2, backoff=BackoffPolicy(max_attempts=1)
        )
        backend.submit(_spec())
        submit_requests = endpoint.paths().count("/v1/submitjob")
    assert submit_requests == 3  # botocore retried twice inside our single attempt
    assert backend.api_calls["SubmitJob"] == 1


# ---------------------------------------------------------------------------------------------------- rate limit


def test_token_bucket_paces_by_the_injected_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(40, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.acquire()
    assert bucket.waits == 60  # the first 40 ride the burst
    assert clock.now - 1000.0 == pytest.approx(60 / 40)
    clock.now += 10  # idle refills, but never beyond the capacity
    for _ in range(40):
        assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(1 / 40)


def test_token_bucket_is_thread_safe() -> None:
    clock = FrozenClock()
    bucket = TokenBucket(10, capacity=5, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(25)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # time stands still, so the k-th caller beyond the burst must wait k / rate, whatever the interleaving
    assert bucket.waits == 195
    assert sorted(clock.sleeps) == pytest.approx([k / 10 for k in range(1, 196)])


def test_submit_rate_is_limited_per_api(world: BatchWorld, clock: FakeClock) -> None:
    backend = _backend(world, clock, submit_tps=10, describe_tps=5)
    job_ids = [backend.submit(_spec(f"paced-{index}")) for index in range(15)]
    for _ in range(7):
        backend.describe(job_ids[:1])
    assert backend.api_calls["SubmitJob"] == 15
    assert backend.limiter("SubmitJob").waits == 5
    assert backend.limiter("DescribeJobs").waits == 2
    with pytest.raises(ValueError, match="rate must be positive"):
        _backend(world, clock, submit_tps=0)


# ---------------------------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("reference", ["name", "name:revision", "arn"])
def test_overrides_length_matches_the_json_aws_counts(world: BatchWorld, clock: FakeClock, reference: str) -> None:
    job_definition = {
        "name": world.job_definition,
        "name:revision": f"{world.job_definition}:1",
        "arn": world.job_definition_arn,
    }[reference]
    backend = _backend(world, clock, job_definition=job_definition)
    spec = _spec(payload="A" * 100, resources=Resources(vcpus=0.5, memory_mib=2048))

    expected = (
        '{"command":["scaler-batch","run-job","--payload","' + "A" * 100 + '"],"environment":[],'
        '"resourceRequirements":[{"type":"VCPU","value":"0.5"},{"type":"MEMORY","value":"2048"}]}'
    )
    assert backend.overrides_length(spec) == len(expected)
    assert backend.overrides_length(_spec(payload="")) == len(
        '{"command":["scaler-batch","run-job","--payload",""],"environment":[],"resourceRequirements":[]}'
    )
    assert backend.api_calls["DescribeJobDefinitions"] == 1  # read once, then cached


# ---------------------------------------------------------------------------------------------------- logs


def test_log_tail_reads_the_newest_lines_and_tolerates_a_missing_stream(world: BatchWorld, clock: FakeClock) -> None:
    backend = _backend(world, clock, log_group=f"/aws/batch/test-{uuid.uuid4().hex[:8]}")
    job_id = backend.submit(_spec())
    assert backend.log_tail(job_id, 5) == []  # no such log group yet
    assert backend.log_tail("unknown-job", 5) == []

    stream = backend.describe([job_id])[job_id].log_location
    assert stream is not None
    logs = _session().client("logs", endpoint_url=world.url)
    logs.create_log_group(logGroupName=backend.log_group)
    logs.create_log_stream(logGroupName=backend.log_group, logStreamName=stream)
    now_ms = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    logs.put_log_events(
        logGroupName=backend.log_group,
        logStreamName=stream,
        logEvents=[{"timestamp": now_ms - 10 + index, "message": f"line {index}"} for index in range(10)],
    )
    assert backend.log_tail(job_id, 3) == ["line 7", "line 8", "line 9"]
    assert backend.log_tail(job_id, 0) == []


# ---------------------------------------------------------------------------------------------------- emulator
# The project's Batch emulator runs jobs as local processes and enforces AWS's limits (TPS, 100 ids, 8,192
# characters of overrides), which moto does not. It resets moto's process-global state when it starts and stops, so
# these tests come last in this module and the ``world`` fixture re-applies moto's configuration for each test.

needs_emulator = pytest.mark.skipif(not HAVE_EMULATOR, reason="batch_emulator is not importable")

FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED})
WAIT_SECONDS = 60.0


def _emulator_backend(emulator: Any, job_queue: str, job_definition: str, **kwargs: Any) -> AwsBatchBackend:
    options: dict[str, Any] = {
        "job_queue": job_queue,
        "job_definition": job_definition,
        "batch_client": emulator.client("batch", max_attempts=1),  # injected clients, botocore retries off
        "logs_client": emulator.client("logs"),
        "describe_tps": 50,
    }
    options.update(kwargs)
    return AwsBatchBackend(**options)


def _wait_for_state(backend: AwsBatchBackend, job_id: str, states: frozenset[JobState]) -> Any:
    """Poll until the job reaches one of ``states``; the bound only stops a broken test, it is not asserted."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        status = backend.describe([job_id]).get(job_id)
        if status is not None and status.state in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {sorted(state.value for state in states)}")


@needs_emulator
def test_emulator_paced_submits_are_never_throttled() -> None:
    config = batch_emulator.EmulatorConfig(tps_limits={"SubmitJob": 50.0})
    with batch_emulator.BatchEmulator(config) as emulator:
        queue, definition = emulator.create_queue_and_job_definition(command=["true"])
        backend = _emulator_backend(emulator, queue, definition)  # default 40 TPS, under the emulator's 50
        job_ids = {backend.submit(_spec(f"paced-{index}")) for index in range(70)}
        throttled = emulator.api_calls.throttled["SubmitJob"]
        received = emulator.api_calls["SubmitJob"]
    assert len(job_ids) == 70
    assert throttled == 0
    assert received == backend.api_calls["SubmitJob"] == 70


@needs_emulator
def test_emulator_injected_throttles_and_server_errors_are_retried(clock: FakeClock) -> None:
    faults = batch_emulator.Faults(
        seed=3, throttle_rate_by_api={"DescribeJobs": 0.4}, server_error_rate_by_api={"SubmitJob": 0.4}
    )
    with batch_emulator.BatchEmulator(faults=faults) as emulator:
        queue, definition = emulator.create_queue_and_job_definition(command=["true"])
        backend = _emulator_backend(
            emulator, queue, definition, clock=clock, sleep=clock.sleep, backoff=BackoffPolicy(max_attempts=30)
        )
        job_ids = [backend.submit(_spec(f"faulty-{index}")) for index in range(10)]
        described = [backend.describe(job_ids) for _ in range(10)]
        calls = emulator.api_calls
        server_errors, throttled = calls.server_errors["SubmitJob"], calls.throttled["DescribeJobs"]
        received_submits, received_describes = calls["SubmitJob"], calls["DescribeJobs"]
    assert len(set(job_ids)) == 10
    assert all(set(statuses) == set(job_ids) for statuses in described)
    assert server_errors > 0 and throttled > 0
    assert backend.retried_calls["SubmitJob"] == server_errors
    assert backend.retried_calls["DescribeJobs"] == throttled
    assert backend.api_calls["SubmitJob"] == received_submits == 10 + server_errors
    assert backend.api_calls["DescribeJobs"] == received_describes == 10 + throttled
    assert len(clock.sleeps) == server_errors + throttled


@needs_emulator
def test_emulator_describes_an_array_of_100_children_in_one_call() -> None:
    with batch_emulator.BatchEmulator(batch_emulator.EmulatorConfig(max_running_jobs=16)) as emulator:
        queue, definition = emulator.create_queue_and_job_definition(command=["true"])
        backend = _emulator_backend(emulator, queue, definition)
        parent_id = backend.submit(_spec("array-100", array_size=100))
        parent = _wait_for_state(backend, parent_id, FINAL_STATES)
        children = backend.describe([f"{parent_id}:{index}" for index in range(100)])
        max_ids = emulator.api_calls.max_describe_ids
    assert parent.state is JobState.SUCCEEDED
    assert parent.array_summary is not None and parent.array_summary[JobState.SUCCEEDED] == 100
    assert len(children) == 100
    assert {status.state for status in children.values()} == {JobState.SUCCEEDED}
    assert max_ids == 100


@needs_emulator
def test_emulator_cancel_with_a_stale_queued_state_still_stops_a_running_job() -> None:
    with batch_emulator.BatchEmulator() as emulator:
        queue, definition = emulator.create_queue_and_job_definition(command=["sleep", "120"])
        backend = _emulator_backend(emulator, queue, definition)
        job_id = backend.submit(_spec("long-runner"))
        _wait_for_state(backend, job_id, frozenset({JobState.RUNNING}))
        backend.cancel(job_id, JobState.RUNNABLE, "deadline passed")  # the caller last saw it queued
        final = _wait_for_state(backend, job_id, FINAL_STATES)
        backend.cancel(job_id, None, "again")  # a job that already ended is tolerated
    assert final.state is JobState.FAILED
    assert backend.api_calls["CancelJob"] == 2
    assert backend.api_calls["TerminateJob"] == 2


@needs_emulator
def test_emulator_agrees_with_overrides_length_at_the_limit() -> None:
    with batch_emulator.BatchEmulator() as emulator:
        queue, definition = emulator.create_queue_and_job_definition(command=["python3", "-c", "pass", "Ref::payload"])
        backend = _emulator_backend(emulator, queue, definition)
        resources = Resources(vcpus=1, memory_mib=1024)
        room = 8192 - backend.overrides_length(_spec(payload="", resources=resources))
        fits = _spec("fits", payload="A" * room, resources=resources)
        too_long = _spec("too-long", payload="A" * (room + 100), resources=resources)
        assert backend.overrides_length(fits) == 8192
        fits_status = _wait_for_state(backend, backend.submit(fits), FINAL_STATES)
        too_long_status = _wait_for_state(backend, backend.submit(too_long), FINAL_STATES)
    assert fits_status.state is JobState.SUCCEEDED
    assert too_long_status.state is JobState.FAILED
    assert too_long_status.status_reason is not None
    assert StatusReason.OVERRIDES_TOO_LONG in too_long_status.status_reason


@needs_emulator
def test_emulator_log_tail_returns_the_last_lines() -> None:
    with batch_emulator.BatchEmulator() as emulator:
        command = ["python3", "-c", "for i in range(20): print(f'line {i}')"]
        queue, definition = emulator.create_queue_and_job_definition(command=command)
        backend = _emulator_backend(emulator, queue, definition)
        job_id = backend.submit(_spec("chatty"))
        status = _wait_for_state(backend, job_id, FINAL_STATES)
        tail = backend.log_tail(job_id, 3)
    assert status.state is JobState.SUCCEEDED
    assert status.log_location
    assert tail == ["line 17", "line 18", "line 19"]
