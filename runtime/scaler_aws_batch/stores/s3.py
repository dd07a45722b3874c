"""S3 as the object store (``s3://bucket/prefix``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler_aws_batch.errors import ObjectMissingError, StoreError
from scaler_aws_batch.stores.base import ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ALREADY_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AccessDenied", "InvalidToken"}
)


def s3_client_config() -> Config:
    # Standard mode retries 5xx and SlowDown with backoff: S3 answers 503 SlowDown while it scales a prefix.
    return Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=32)


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", *, client: S3Client | None = None) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket name")
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._client: S3Client = client if client is not None else boto3.client("s3", config=s3_client_config())

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

    def _error(self, action: str, key: str, exc: ClientError | BotoCoreError) -> StoreError:
        location = f"s3://{self._bucket}/{self._key(key)}"
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return StoreError(
                    f"cannot {action} {location}: bucket {self._bucket!r} does not exist (check --bucket)"
                )
            if code in _CREDENTIAL_CODES:
                return StoreError(
                    f"cannot {action} {location}: AWS refused the credentials ({code}); check the role or "
                    "AWS_PROFILE and that the policy allows this prefix"
                )
            return StoreError(f"cannot {action} {location}: {code}")
        return StoreError(f"cannot {action} {location}: {exc}")

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write", key, exc) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key), "Body": data, "IfNoneMatch": "*"}
        try:
            self._client.put_object(**kwargs)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _ALREADY_EXISTS_CODES:
                return False
            raise self._error("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key(key))
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING_CODES:
                raise ObjectMissingError(f"object s3://{self._bucket}/{self._key(key)} does not exist") from exc
            raise self._error("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _MISSING_CODES:
                return False
            raise self._error("check", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("check", key, exc) from exc

    def list_keys(self, prefix: str) -> set[str]:
        strip = len(self._key(""))
        keys: set[str] = set()
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                keys.update(item["Key"][strip:] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix, exc) from exc
        return keys

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from exc
