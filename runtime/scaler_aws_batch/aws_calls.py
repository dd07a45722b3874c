"""The one layer every AWS call of the adapter goes through: Batch, S3, CloudWatch Logs and CloudFormation alike.

:meth:`AwsCalls.call`

* waits on a per-operation client-side token bucket (SubmitJob stays below AWS's 50 TPS account limit),
* counts the call in :attr:`AwsCalls.api_calls`,
* classifies an error by its ``Error.Code`` (and HTTP status), never by its message text (:func:`classify`),
* retries throttling and 5xx answers with full-jitter exponential backoff, a bounded number of times, on top of
  botocore's own ``standard`` retries,
* on expired or rejected credentials, asks its owner to rebuild its clients from a fresh credential chain (at most
  once per ``refresh_interval_seconds``) and tries once more.

What is still failing after that is raised as :class:`AwsUnavailableError` (throttled, 5xx, credentials, network):
nothing is wrong with the request, so callers pause and retry later (the engine requeues submissions and pauses
its vanish clock). Everything else is raised unchanged as ``ClientError`` for the caller to map.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import botocore.exceptions

from scaler_aws_batch.errors import BackendError, BackendUnavailableError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Our own attempts per call on throttling / 5xx, each of which may itself be retried by botocore.
DEFAULT_THROTTLE_ATTEMPTS: Final = 6
DEFAULT_BACKOFF_BASE_SECONDS: Final = 0.5
DEFAULT_BACKOFF_CAP_SECONDS: Final = 20.0
#: Calls per second for operations without a configured rate.
DEFAULT_OTHER_TPS: Final = 10.0
#: CancelJob and TerminateJob calls per second, each (its own token bucket, bursts up to one second's worth). AWS
#: publishes no rate for them; 10 per second is this project's assumption, the pace that stays clear of throttling.
#: A job stopped at shutdown takes one call of each kind at most, so this is also the jobs stopped per second.
STOP_JOB_TPS: Final = 10.0
#: Rebuild clients from the credential chain at most this often while AWS keeps refusing the credentials.
DEFAULT_REFRESH_INTERVAL_SECONDS: Final = 5.0

#: Error codes that mean the caller's credentials are missing, wrong or expired (Batch, Logs, CloudFormation, S3).
CREDENTIAL_ERROR_CODES: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
        "AuthFailure",
        "InvalidAccessKeyId",
        "InvalidToken",
    }
)
#: Error codes that mean the credentials are valid but lack a permission.
ACCESS_DENIED_ERROR_CODES: Final = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
#: Error codes that mean "slow down": the request was fine, there were too many of them.
THROTTLING_ERROR_CODES: Final = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",  # S3, with HTTP 503
        "ProvisionedThroughputExceededException",
    }
)
#: Error codes of a failure on AWS's side.
SERVER_ERROR_CODES: Final = frozenset(
    {
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
SERVER_ERROR_HTTP_STATUSES: Final = frozenset({500, 502, 503, 504})


class ErrorClass(enum.Enum):
    """What an AWS error means for the caller; each class has its own hint."""

    THROTTLED = "throttled"
    SERVER = "server error"
    CREDENTIALS = "credentials"
    NETWORK = "network"
    ACCESS_DENIED = "access denied"
    REQUEST = "request"  # anything else: the request itself is wrong, retrying will not help

    @property
    def is_transient(self) -> bool:
        return self in (ErrorClass.THROTTLED, ErrorClass.SERVER, ErrorClass.CREDENTIALS, ErrorClass.NETWORK)


#: What to do about each transient class, for error messages and logs.
HINTS: Final[Mapping[ErrorClass, str]] = {
    ErrorClass.THROTTLED: "AWS throttled the requests; lower the request rate (--submit-tps / --describe-tps) or "
    "ask AWS for a higher limit",
    ErrorClass.SERVER: "AWS answered with server errors (HTTP 5xx), a problem on AWS's side; retry later and check "
    "the AWS Health Dashboard for the region",
    ErrorClass.CREDENTIALS: "AWS rejected the credentials: they are wrong or expired. Refresh them (e.g. `aws sso "
    "login`, a new session token, or unset stale AWS_ACCESS_KEY_ID / AWS_SESSION_TOKEN so the default chain can "
    "find a role) and check AWS_PROFILE and the region",
    ErrorClass.NETWORK: "the AWS endpoint could not be reached; check the network, proxy, VPC endpoints and "
    "--endpoint-url",
}


def error_code(exc: botocore.exceptions.ClientError) -> str:
    """The ``Error.Code`` of a ClientError ('' when absent)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: botocore.exceptions.ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def classify(exc: botocore.exceptions.ClientError) -> ErrorClass:
    """The class of an AWS error, from its code and HTTP status only (message texts change without notice)."""
    code = error_code(exc)
    if code in ACCESS_DENIED_ERROR_CODES:
        return ErrorClass.ACCESS_DENIED
    if code in CREDENTIAL_ERROR_CODES:
        return ErrorClass.CREDENTIALS
    if code in THROTTLING_ERROR_CODES or http_status(exc) == 429:
        return ErrorClass.THROTTLED
    if code in SERVER_ERROR_CODES or http_status(exc) in SERVER_ERROR_HTTP_STATUSES:
        return ErrorClass.SERVER
    return ErrorClass.REQUEST


class AwsUnavailableError(BackendUnavailableError):
    """AWS did not serve the call for a transient reason (``error_class``); the request itself may be fine."""

    def __init__(self, message: str, error_class: ErrorClass) -> None:
        ambiguous = error_class in (ErrorClass.SERVER, ErrorClass.NETWORK)
        super().__init__(message, hint=HINTS.get(error_class, ""), maybe_applied=ambiguous)
        self.error_class = error_class


class AwsRetriesExhaustedError(AwsUnavailableError):
    """AWS kept throttling or failing (5xx) after every allowed attempt."""


class AwsCredentialsError(AwsUnavailableError):
    """AWS refused the credentials (missing, wrong or expired), also after rebuilding the clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorClass.CREDENTIALS)


class AwsAccessDeniedError(BackendError):
    """The credentials are valid but lack a permission this adapter needs. Not transient."""


class TokenBucket:
    """A thread-safe token bucket: at most ``rate`` acquisitions per second on average, bursts up to ``capacity``.

    A caller that finds no token reserves the next one (the balance may go negative) and sleeps outside the lock,
    so concurrent callers queue up fairly instead of spinning. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate)
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._updated = clock()
        #: How many acquisitions had to wait, and for how long in total (clock seconds).
        self.waits = 0
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Take one token, sleeping until it is available. Returns the seconds waited (0.0 when none)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
            if wait > 0:
                self.waits += 1
                self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    """Full-jitter exponential backoff: attempt ``n`` (0-based) sleeps ``uniform(0, min(cap, base * 2**n))``."""

    max_attempts: int = DEFAULT_THROTTLE_ATTEMPTS
    base_seconds: float = DEFAULT_BACKOFF_BASE_SECONDS
    cap_seconds: float = DEFAULT_BACKOFF_CAP_SECONDS

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("backoff base and cap must not be negative")

    def delay(self, retry_number: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * (2**retry_number)))


_NO_CREDENTIALS_ERRORS: Final = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
)
_NETWORK_ERRORS: Final = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)


class AwsCalls:
    """Pacing, counting, classification, backoff and credential refresh for one owner's AWS clients.

    ``rates`` maps operation names to calls per second (others get ``other_tps``). ``refresh_credentials`` rebuilds
    the owner's clients from a fresh credential chain; without it, a credential error is raised at once.
    """

    def __init__(
        self,
        *,
        rates: Mapping[str, float] | None = None,
        other_tps: float = DEFAULT_OTHER_TPS,
        backoff: BackoffPolicy | None = None,
        refresh_credentials: Callable[[], None] | None = None,
        refresh_interval_seconds: float = DEFAULT_REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or BackoffPolicy()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._limiters = {name: TokenBucket(rate, clock=clock, sleep=sleep) for name, rate in (rates or {}).items()}
        self._other_tps = other_tps
        self._refresh = refresh_credentials
        self._refresh_interval = refresh_interval_seconds
        self._refreshed_at: float | None = None
        #: Calls made to AWS by operation name (each of our attempts counts once; botocore's own retries do not).
        self.api_calls: collections.Counter[str] = collections.Counter()
        #: Attempts that were throttled or got a 5xx and were retried by us, by operation name.
        self.retried_calls: collections.Counter[str] = collections.Counter()
        #: How often the clients were rebuilt because AWS refused the credentials.
        self.credential_refreshes = 0

    @property
    def backoff(self) -> BackoffPolicy:
        return self._backoff

    def limiter(self, operation: str) -> TokenBucket:
        """The token bucket that paces ``operation`` (created on first use for APIs without a configured rate)."""
        with self._lock:
            bucket = self._limiters.get(operation)
            if bucket is None:
                bucket = self._limiters[operation] = TokenBucket(self._other_tps, clock=self._clock, sleep=self._sleep)
            return bucket

    def call(self, operation: str, request: Callable[[], _T]) -> _T:
        """Run ``request`` (one SDK call, reading the owner's current client) under the rules of this layer."""
        limiter = self.limiter(operation)
        refreshed = False
        attempt = 0
        while True:
            limiter.acquire()
            with self._lock:
                self.api_calls[operation] += 1
            try:
                return request()
            except botocore.exceptions.ClientError as exc:
                error_class = classify(exc)
                code = error_code(exc) or str(http_status(exc))
                if error_class is ErrorClass.ACCESS_DENIED:
                    raise AwsAccessDeniedError(
                        f"AWS denied {operation} ({code}): the credentials in use lack a permission. Attach the "
                        "stack's AdapterPolicyArn policy to the adapter's role or user, and check that the queue, "
                        "job definition, bucket and region are the ones that policy names."
                    ) from exc
                if error_class is ErrorClass.CREDENTIALS:
                    if not refreshed and self._refresh_clients(operation, code):
                        refreshed = True
                        continue
                    raise AwsCredentialsError(
                        f"AWS rejected the credentials for {operation} ({code}); {HINTS[ErrorClass.CREDENTIALS]}."
                    ) from exc
                if not error_class.is_transient:
                    raise
                attempt += 1
                if attempt >= self._backoff.max_attempts:
                    raise AwsRetriesExhaustedError(
                        f"AWS kept answering {operation} with {code} after {self._backoff.max_attempts} attempts; "
                        f"{HINTS[error_class]}",
                        error_class,
                    ) from exc
                self._pause(operation, code, attempt)
            except _NO_CREDENTIALS_ERRORS as exc:
                if not refreshed and self._refresh_clients(operation, type(exc).__name__):
                    refreshed = True
                    continue
                raise AwsCredentialsError(
                    f"no usable AWS credentials for {operation} ({type(exc).__name__}): configure the default "
                    "credential chain (AWS_PROFILE, `aws sso login`, an instance or task role)"
                ) from exc
            except _NETWORK_ERRORS as exc:
                attempt += 1
                if attempt >= self._backoff.max_attempts:
                    raise AwsUnavailableError(
                        f"cannot reach the AWS endpoint for {operation} ({type(exc).__name__}); "
                        f"{HINTS[ErrorClass.NETWORK]}",
                        ErrorClass.NETWORK,
                    ) from exc
                self._pause(operation, type(exc).__name__, attempt)

    def _pause(self, operation: str, code: str, attempt: int) -> None:
        with self._lock:
            delay = self._backoff.delay(attempt - 1, self._rng)
            self.retried_calls[operation] += 1
        logger.info("%s answered %s (attempt %d of %d); retrying in %.2fs", operation, code, attempt,
                    self._backoff.max_attempts, delay)  # fmt: skip
        self._sleep(delay)

    def _refresh_clients(self, operation: str, code: str) -> bool:
        """Rebuild the owner's clients from the credential chain, unless that was done very recently."""
        if self._refresh is None:
            return False
        now = self._clock()
        with self._lock:
            if self._refreshed_at is not None and now - self._refreshed_at < self._refresh_interval:
                return False
            self._refreshed_at = now
            self.credential_refreshes += 1
        logger.warning("%s: AWS refused the credentials (%s); reloading them from the credential chain", operation,
                       code)  # fmt: skip
        self._refresh()
        return True
