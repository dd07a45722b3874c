"""Object stores: a local directory (``file:///path``) or S3 (``s3://bucket/prefix``), behind one interface."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlparse

from scaler_aws_batch.stores.base import ObjectStore


def open_store(url: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    """Open the store a URL names. S3 clients come from the default credential chain and the process environment,
    or from ``env`` (endpoint, region, keys) when given."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from scaler_aws_batch.stores.local import LocalDirectoryStore

        return LocalDirectoryStore.from_url(url)
    if scheme == "s3":
        from scaler_aws_batch.stores.s3 import S3Store  # boto3 is only imported when S3 is used

        return S3Store.from_url(url, env=env)
    raise ValueError(f"unknown store URL {url!r}: use s3://bucket/prefix or file:///absolute/path")


__all__ = ["ObjectStore", "open_store"]
