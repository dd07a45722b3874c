"""The emulator's front: the WSGI app every request reaches first, and the gate that counts and faults them.

Batch job APIs (SubmitJob, DescribeJobs, ListJobs, Cancel/TerminateJob, job tagging) are served by the job engine;
everything else goes to moto. Before either, the gate counts each Batch call, applies the TPS limits and injected
faults (throttling, server errors, expired credentials, S3 SlowDown).
"""

from __future__ import annotations

import fnmatch
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session

from batch_emulator import rules
from batch_emulator.config import ApiCalls, EmulatorConfig, Faults
from batch_emulator.engine import Engine
from batch_emulator.rules import BatchApiError, client_error
from batch_emulator.s3_requests import S3Requests

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


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


class RequestGate:
    """Counts Batch calls by operation and decides, before a request is served, whether a limit or an injected fault
    answers it instead."""

    def __init__(self, config: EmulatorConfig, faults: Faults, api_calls: ApiCalls) -> None:
        self.config = config
        self.faults = faults
        self.api_calls = api_calls
        self._routes = _batch_routes()
        self._buckets: dict[str, _TokenBucket] = {}
        self._stats_lock = threading.Lock()

    def lost_put(self, environ: dict[str, Any]) -> bool:
        """An S3 PUT that `faults.lost_s3_put_globs` makes answer 200 without storing anything."""
        if environ.get("REQUEST_METHOD") != "PUT" or not self.faults.lost_s3_put_globs:
            return False
        path = unquote(str(environ.get("PATH_INFO", "")))
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.faults.lost_s3_put_globs)

    def reset(self) -> None:
        """Zero the counts (calls, throttled, server errors, describe sizes)."""
        with self._stats_lock:
            self.api_calls.clear()
            self.api_calls.throttled.clear()
            self.api_calls.server_errors.clear()
            self.api_calls.credential_errors.clear()
            self.api_calls.s3_slow_downs = 0
            self.api_calls.max_describe_ids = 0
            self.api_calls.describe_ids_total = 0

    def operation(self, environ: dict[str, Any]) -> str | None:
        """The Batch operation name of a request, or None when it is not a Batch request."""
        if _signed_service(environ) != "batch":
            return None
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if path.startswith("/v1/tags/"):
            return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method)
        return self._routes.get((method, path.rstrip("/")))

    def admit(self, operation: str) -> BatchApiError | None:
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

    def credential_or_s3_fault(self, environ: dict[str, Any]) -> Callable[[StartResponse], list[bytes]] | None:
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

    def record_describe(self, count: int) -> None:
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


class ServiceRouter:
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


class FrontApp:
    """WSGI app of the front server: Batch job APIs here, everything else to moto."""

    def __init__(
        self, gate: RequestGate, s3_requests: S3Requests, engine: Callable[[], Engine], moto_app: WsgiApp
    ) -> None:
        self._gate = gate
        self._s3_requests = s3_requests
        self._engine = engine
        self._moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        fault = self._gate.credential_or_s3_fault(environ)
        if fault is not None:
            return fault(start_response)
        operation = self._gate.operation(environ)
        if operation is None:
            if _signed_service(environ) == "s3":
                self._s3_requests.record(environ)
                if self._gate.lost_put(environ):
                    _read_body(environ)
                    start_response("200 OK", [("ETag", '"00000000000000000000000000000000"'), ("Content-Length", "0")])
                    return [b""]
            return self._moto_app(environ, start_response)
        body = _read_body(environ)
        error = self._gate.admit(operation)
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
        engine = self._engine()
        if operation == "SubmitJob" and len(body) > rules.SUBMIT_JOB_MAX_BYTES:
            raise client_error(rules.MSG_JOB_TOO_BIG)
        req = _parse_json(body)
        if operation == "SubmitJob":
            delay = self._gate.faults.submit_delay_seconds  # read once: a test may reset it while this one waits
            if delay > 0:  # this request's thread goes on if the client hangs up
                time.sleep(delay)
            return engine.submit(req)
        if operation == "DescribeJobs":
            ids = req.get("jobs")
            if not isinstance(ids, list):
                raise client_error("jobs is required")
            self._gate.record_describe(len(ids))
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
