"""S3 as the object store (``s3://bucket/prefix``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler_aws_batch.aws_calls import AwsAccessDeniedError, AwsCalls, AwsUnavailableError, error_code
from scaler_aws_batch.errors import ObjectMissingError, StoreError, StoreUnavailableError
from scaler_aws_batch.stores.base import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_T = TypeVar("_T")

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ALREADY_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
#: S3 serves thousands of requests per second per prefix; this only keeps one adapter from hogging it.
S3_OPERATIONS_TPS = 500.0


def s3_client_config() -> Config:
    # Standard mode retries 5xx and SlowDown a little; the shared call layer backs off further on top.
    return Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32)


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
        factory = client_factory or (lambda: boto3.client("s3", config=s3_client_config()))
        self._client: S3Client = client if client is not None else factory()

        def refresh() -> None:
            self._client = factory()

        refreshable = client is None or client_factory is not None
        self.calls = calls or AwsCalls(
            other_tps=S3_OPERATIONS_TPS, refresh_credentials=refresh if refreshable else None
        )

    @staticmethod
    def from_url(url: str, *, client: S3Client | None = None) -> S3Store:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 store URL looks like s3://bucket/prefix, got {url!r}")
        return S3Store(parsed.netloc, parsed.path, client=client)

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
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key), "Body": data, "IfNoneMatch": "*"}
        try:
            self._call("PutObject", "write", key, lambda: self._client.put_object(**kwargs))
            return True
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_code(cause) in _ALREADY_EXISTS_CODES:
                return False
            raise

    def get(self, key: str) -> bytes:
        def read() -> bytes:
            return self._client.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()

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
