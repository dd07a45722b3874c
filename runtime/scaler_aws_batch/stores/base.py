"""The object store interface shared by the adapter (payloads in, results out) and the runner."""

from __future__ import annotations

import abc
from collections.abc import Sequence


class ObjectStore(abc.ABC):
    """A flat key space under one base URL (``s3://bucket/prefix`` or ``file:///dir``)."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The base URL; :func:`scaler_aws_batch.stores.open_store` turns it back into an equal store."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing what was there."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist. Returns False when it already existed.

        Results are written this way so that a job that runs twice (Batch is at-least-once) keeps the first result.
        """

    # --- conditional writes, for small coordination objects (the adapter's lease) ---------------------------------
    # A *tag* identifies one version of an object (S3: its ETag; a directory: a digest of its content): a write
    # conditioned on the tag succeeds only if nobody changed the object since it was read.

    @abc.abstractmethod
    def create_tagged(self, key: str, data: bytes) -> str | None:
        """Create ``key`` only if it does not exist: its new tag, or None when it already existed."""

    @abc.abstractmethod
    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and its tag; :class:`~scaler_aws_batch.errors.ObjectMissingError` when it does not exist."""

    @abc.abstractmethod
    def replace_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        """Replace ``key`` only if its tag is still ``tag``: the new tag, or None when it changed or is gone."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Read ``key``; raise :class:`~scaler_aws_batch.errors.ObjectMissingError` when it does not exist."""

    def read_range(self, key: str, start: int, end: int) -> tuple[bytes, int]:
        """Bytes [start, end) of ``key`` (fewer where the object ends first) and the object's size. Stores that can
        read a range without the whole object override this."""
        data = self.get(key)
        return data[start:end], len(data)

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list_keys(self, prefix: str) -> set[str]:
        """Every key that starts with ``prefix`` (keys relative to the store, like ``put`` takes them)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete every key; missing keys are not an error. Stores with a bulk call override this."""
        for key in keys:
            self.delete(key)
