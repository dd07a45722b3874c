"""The shared AWS-call layer: classification by error code, backoff, credential refresh, and S3 through it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import botocore.exceptions
import pytest

from scaler_aws_batch.aws_calls import (
    AwsAccessDeniedError,
    AwsCalls,
    AwsCredentialsError,
    AwsRetriesExhaustedError,
    BackoffPolicy,
    ErrorClass,
    classify,
)


def _error(code: str, status: int, message: str = "opaque text") -> botocore.exceptions.ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "AnyOperation")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, ErrorClass.THROTTLED),
        ("TooManyRequestsException", 429, ErrorClass.THROTTLED),
        ("", 429, ErrorClass.THROTTLED),
        ("ServerException", 500, ErrorClass.SERVER),
        ("InternalError", 500, ErrorClass.SERVER),
        ("", 502, ErrorClass.SERVER),
        ("ExpiredToken", 400, ErrorClass.CREDENTIALS),
        ("ExpiredTokenException", 403, ErrorClass.CREDENTIALS),
        ("InvalidAccessKeyId", 403, ErrorClass.CREDENTIALS),
        ("AccessDenied", 403, ErrorClass.ACCESS_DENIED),
        ("ClientException", 400, ErrorClass.REQUEST),
        ("NoSuchKey", 404, ErrorClass.REQUEST),
    ],
)
def test_errors_are_classified_by_code_and_status(code: str, status: int, expected: ErrorClass) -> None:
    assert classify(_error(code, status)) is expected


def test_message_text_never_changes_the_class() -> None:
    assert classify(_error("ClientException", 400, "The security token included in the request is expired")) is (
        ErrorClass.REQUEST
    )


class _Script:
    """An SDK call that fails with the given errors, then answers ``"ok"``; counts its requests."""

    def __init__(self, errors: list[botocore.exceptions.ClientError]) -> None:
        self._errors: Iterator[botocore.exceptions.ClientError] = iter(errors)
        self.requests = 0

    def __call__(self) -> str:
        self.requests += 1
        error = next(self._errors, None)
        if error is not None:
            raise error
        return "ok"


def _layer(refresh: Callable[[], None] | None = None, attempts: int = 4) -> tuple[AwsCalls, list[float]]:
    sleeps: list[float] = []
    layer = AwsCalls(
        backoff=BackoffPolicy(max_attempts=attempts, base_seconds=0.5, cap_seconds=4),
        refresh_credentials=refresh,
        sleep=sleeps.append,
        rng=random.Random(7),
    )
    return layer, sleeps


def test_throttling_and_5xx_back_off_with_jitter_then_succeed() -> None:
    layer, sleeps = _layer()
    script = _Script([_error("SlowDown", 503), _error("InternalError", 500), _error("", 503)])
    assert layer.call("GetObject", script) == "ok"
    assert script.requests == 4 and layer.retried_calls["GetObject"] == 3
    assert all(0 <= pause <= min(4, 0.5 * 2**number) for number, pause in enumerate(sleeps))


@pytest.mark.parametrize(
    ("code", "status", "hint"), [("ThrottlingException", 400, "request rate"), ("ServerException", 500, "5xx")]
)
def test_the_hint_matches_the_error_class(code: str, status: int, hint: str) -> None:
    layer, _ = _layer(attempts=2)
    with pytest.raises(AwsRetriesExhaustedError) as caught:
        layer.call("SubmitJob", _Script([_error(code, status)] * 5))
    assert hint in str(caught.value) and hint in caught.value.hint
    other = "5xx" if hint == "request rate" else "request rate"
    assert other not in str(caught.value)


def test_expired_credentials_rebuild_the_clients_and_retry_once() -> None:
    refreshed: list[int] = []
    layer, _ = _layer(refresh=lambda: refreshed.append(1))
    script = _Script([_error("ExpiredToken", 400)])
    assert layer.call("DescribeJobs", script) == "ok"
    assert refreshed == [1] and script.requests == 2 and layer.credential_refreshes == 1


def test_credentials_still_refused_after_a_refresh_raise_a_transient_error() -> None:
    refreshed: list[int] = []
    layer, _ = _layer(refresh=lambda: refreshed.append(1))
    script = _Script([_error("ExpiredTokenException", 403)] * 3)
    with pytest.raises(AwsCredentialsError, match="ExpiredTokenException") as caught:
        layer.call("DescribeJobs", script)
    assert caught.value.error_class.is_transient and "aws sso login" in caught.value.hint
    assert refreshed == [1] and script.requests == 2
    # A second call within the refresh interval does not rebuild the clients again.
    with pytest.raises(AwsCredentialsError):
        layer.call("DescribeJobs", _Script([_error("ExpiredToken", 400)]))
    assert refreshed == [1]


def test_access_denied_is_neither_retried_nor_transient() -> None:
    layer, _ = _layer(refresh=lambda: None)
    script = _Script([_error("AccessDeniedException", 403)])
    with pytest.raises(AwsAccessDeniedError, match="AdapterPolicyArn"):
        layer.call("SubmitJob", script)
    assert script.requests == 1


def test_request_errors_are_raised_unchanged() -> None:
    layer, _ = _layer()
    with pytest.raises(botocore.exceptions.ClientError):
        layer.call("SubmitJob", _Script([_error("ClientException", 400)]))
