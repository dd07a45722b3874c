"""S3 as the object store (``s3://bucket/prefix``)."""

from __future__ import annotations

import datetime
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from scaler_aws_batch.aws_calls import AwsAccessDeniedError, AwsCalls, AwsUnavailableError, error_code
from scaler_aws_batch.aws_clients import client_config
from scaler_aws_batch.errors import ObjectMissingError, StoreError, StoreUnavailableError
from scaler_aws_batch.stores.base import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_T = TypeVar("_T")

_DELETE_OBJECTS_MAX_KEYS = 1000  # S3 DeleteObjects' limit per request
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ALREADY_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
#: S3 serves thousands of requests per second per prefix; this only keeps one adapter from hogging it.
S3_OPERATIONS_TPS = 500.0


def s3_client_config() -> Config:
    # Standard mode retries 5xx and SlowDown a little; the shared call layer backs off further on top.
    return client_config(max_retries=3, max_pool_connections=32)


def parse_s3_timestamp(value: str) -> datetime.datetime:
    """S3's ISO 8601 timestamps (``2026-11-22T05:40:00.000Z``) without dateutil: botocore's default parser took a
    fifth of the adapter's CPU, parsing the LastModified of every key of every results listing. Anything else (an
    HTTP date in a header) goes to botocore's own parser."""
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return parse_timestamp(value)


def s3_session(**kwargs: Any) -> boto3.session.Session:
    """A boto3 session (``kwargs`` as ``boto3.session.Session`` takes them) whose clients parse timestamps with
    :func:`parse_s3_timestamp`."""
    core = botocore.session.Session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    return boto3.session.Session(botocore_session=core, **kwargs)


_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_SDK_UA_APP_ID")  # fmt: skip


def _client_settings(env: Mapping[str, str]) -> tuple[str | None, ...]:
    return tuple(env.get(name) or None for name in _ENV_KEYS)


def _new_client(settings: tuple[str | None, ...]) -> S3Client:
    key, secret, token, region, default_region, s3_endpoint, endpoint, app_id = settings
    session = s3_session(
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        region_name=region or default_region,
    )
    # AWS_SDK_UA_APP_ID, as the SDK itself would read it from the process environment.
    config = s3_client_config().merge(Config(user_agent_appid=app_id)) if app_id else s3_client_config()  # type: ignore[call-arg]
    return session.client("s3", endpoint_url=s3_endpoint or endpoint, config=config)


_shared_clients_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def _cached_client(settings: tuple[str | None, ...]) -> S3Client:
    return _new_client(settings)


def _shared_client(settings: tuple[str | None, ...]) -> S3Client:
    # Building a client costs tens of milliseconds of CPU; clients are thread-safe, so jobs with the same settings
    # share one (built once, under the lock, even when many jobs start together).
    with _shared_clients_lock:
        return _cached_client(settings)


class S3Store(ObjectStore):
    """``client_factory`` (given a fresh ``boto3.Session``) lets the call layer rebuild the client when AWS refuses
    the credentials; a store built from a ready ``client`` keeps it."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: S3Client | None = None,
        client_factory: Callable[[], S3Client] | None = None,
        calls: AwsCalls | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket name")
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        factory = client_factory or (lambda: s3_session().client("s3", config=s3_client_config()))
        self._client: S3Client = client if client is not None else factory()

        def refresh() -> None:
            self._client = factory()

        refreshable = client is None or client_factory is not None
        self.calls = calls or AwsCalls(
            other_tps=S3_OPERATIONS_TPS, refresh_credentials=refresh if refreshable else None
        )

    @staticmethod
    def from_url(url: str, *, client: S3Client | None = None, env: Mapping[str, str] | None = None) -> S3Store:
        """``env``: take endpoint, region and keys from this mapping instead of the process environment (a runner
        in a thread of another process, e.g. the Batch emulator's in-process mode)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 store URL looks like s3://bucket/prefix, got {url!r}")
        if env is None or client is not None:
            return S3Store(parsed.netloc, parsed.path, client=client)
        settings = _client_settings(env)
        return S3Store(
            parsed.netloc, parsed.path, client=_shared_client(settings), client_factory=lambda: _new_client(settings)
        )

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _call(self, operation: str, action: str, key: str, request: Callable[[], _T]) -> _T:
        """One S3 call through the shared call layer; errors become store errors naming the object."""
        location = f"s3://{self._bucket}/{self._key(key)}"
        try:
            return self.calls.call(operation, request)
        except AwsUnavailableError as exc:
            raise StoreUnavailableError(f"cannot {action} {location} for now: {exc}") from exc
        except AwsAccessDeniedError as exc:
            raise StoreError(f"cannot {action} {location}: {exc} The policy must allow this prefix.") from exc
        except ClientError as exc:
            code = error_code(exc)
            if code in _MISSING_CODES:
                raise ObjectMissingError(f"object {location} does not exist") from exc
            if code == "NoSuchBucket":
                raise StoreError(
                    f"cannot {action} {location}: bucket {self._bucket!r} does not exist (check --bucket)"
                ) from exc
            raise StoreError(f"cannot {action} {location}: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"cannot {action} {location}: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        self._call("PutObject", "write", key,
                   lambda: self._client.put_object(Bucket=self._bucket, Key=self._key(key), Body=data))  # fmt: skip

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, {"IfNoneMatch": "*"}) is not None

    def _conditional_put(self, key: str, data: bytes, condition: Mapping[str, str]) -> str | None:
        """A PutObject under ``condition`` (``IfNoneMatch`` or ``IfMatch``): the new ETag, or None when S3 refused
        the condition (412 PreconditionFailed; 409 ConditionalRequestConflict for a write racing ours; NoSuchKey
        when the object is gone)."""
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key), "Body": data, **condition}
        try:
            answer = self._call("PutObject", "write", key, lambda: self._client.put_object(**kwargs))
        except ObjectMissingError:
            return None
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_code(cause) in _ALREADY_EXISTS_CODES:
                return None
            raise
        return str(answer["ETag"])

    def create_tagged(self, key: str, data: bytes) -> str | None:
        return self._conditional_put(key, data, {"IfNoneMatch": "*"})

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        def read() -> tuple[bytes, str]:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
            return answer["Body"].read(), str(answer["ETag"])

        return self._call("GetObject", "read", key, read)

    def replace_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        return self._conditional_put(key, data, {"IfMatch": tag})

    def get(self, key: str) -> bytes:
        def read() -> bytes:
            return self._client.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()

        return self._call("GetObject", "read", key, read)

    def read_range(self, key: str, start: int, end: int) -> tuple[bytes, int]:
        if end <= start:
            raise ValueError(f"an empty range {start}-{end} of {key}")

        def read() -> tuple[bytes, int]:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key(key), Range=f"bytes={start}-{end - 1}")
            data = answer["Body"].read()
            # "bytes 0-65535/123456"; without a range S3 answers with the whole object.
            total = answer.get("ContentRange", "").rpartition("/")[2]
            return (data, int(total)) if total.isdigit() else (data[start:end], len(data))

        return self._call("GetObject", "read", key, read)

    def exists(self, key: str) -> bool:
        try:
            self._call("HeadObject", "check", key,
                       lambda: self._client.head_object(Bucket=self._bucket, Key=self._key(key)))  # fmt: skip
            return True
        except ObjectMissingError:
            return False

    def list_keys(self, prefix: str) -> set[str]:
        strip = len(self._key(""))
        keys: set[str] = set()
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._key(prefix)}
        while True:  # one paced call per page
            page = self._call("ListObjectsV2", "list", prefix, lambda: self._client.list_objects_v2(**kwargs))
            keys.update(item["Key"][strip:] for item in page.get("Contents", []))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return keys
            kwargs["ContinuationToken"] = token

    def delete(self, key: str) -> None:
        self._call("DeleteObject", "delete", key,
                   lambda: self._client.delete_object(Bucket=self._bucket, Key=self._key(key)))  # fmt: skip

    def delete_many(self, keys: Sequence[str]) -> None:
        """One DeleteObjects request per 1,000 keys (its limit); a key S3 could not delete is an error."""
        for start in range(0, len(keys), _DELETE_OBJECTS_MAX_KEYS):
            chunk = keys[start : start + _DELETE_OBJECTS_MAX_KEYS]
            objects: list[Any] = [{"Key": self._key(key)} for key in chunk]

            def delete(objects: list[Any] = objects) -> Any:
                return self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True})

            answer = self._call("DeleteObjects", "delete", chunk[0], delete)
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(
                    f"cannot delete {len(errors)} of {len(chunk)} object(s) from {self.url}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')}"
                )
