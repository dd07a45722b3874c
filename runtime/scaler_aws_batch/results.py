"""The result path's I/O: finished tasks' result objects are read concurrently (bounded) and deleted in batches.

One task's GET and DELETE took a round trip each, one after the other, inside the reconcile loop; a large array's
results then trickled in at one round trip per task. Here reads run on a pool of their own threads (the default
executor is shared with every other blocking call and has few threads), and deletes wait until a batch is full or the
reconcile round ends, then go out as one DeleteObjects call per 1,000 keys. The bucket's lifecycle rule expires
whatever a failed delete leaves behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from scaler_aws_batch.errors import StoreError
from scaler_aws_batch.stores import ObjectStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Result reads in flight at once; the S3 client's connection pool holds as many connections.
READ_CONCURRENCY = 16
#: S3 DeleteObjects takes at most 1,000 keys per request.
DELETE_BATCH_KEYS = 1000


class ResultIO:
    def __init__(self, store: ObjectStore, *, concurrency: int = READ_CONCURRENCY) -> None:
        self._store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="results")
        self._lock = threading.Lock()
        self._doomed: list[str] = []
        self.deleted = 0
        self.delete_calls = 0

    async def call(self, function: Callable[..., _T], *args: object) -> _T:
        """Run a blocking read on the result pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def discard(self, key: str) -> None:
        """Delete ``key`` with the next batch (thread-safe)."""
        with self._lock:
            self._doomed.append(key)
            full = len(self._doomed) >= DELETE_BATCH_KEYS
        if full:
            self.flush()

    def flush(self) -> None:
        """Send the keys waiting for deletion, without waiting for the answer."""
        with self._lock:
            keys, self._doomed = self._doomed, []
        for start in range(0, len(keys), DELETE_BATCH_KEYS):
            self._pool.submit(self._delete, keys[start : start + DELETE_BATCH_KEYS])

    def _delete(self, keys: list[str]) -> None:
        try:
            self._store.delete_many(keys)
        except StoreError as exc:  # the lifecycle rule expires them; a leftover result costs nothing else
            logger.warning("deleting %d result object(s) failed, the bucket's lifecycle rule will: %s", len(keys), exc)
            return
        with self._lock:
            self.deleted += len(keys)
            self.delete_calls += 1

    def close(self) -> None:
        """Flush pending deletes and wait for them (best effort, on shutdown)."""
        self.flush()
        self._pool.shutdown(wait=True)
