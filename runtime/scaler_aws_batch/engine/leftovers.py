"""Results an earlier run of this adapter left in the store: found at start, never claimed, deleted after the grace.

A result handed to Scaler just before a ``kill -9`` is still stored (deletions go out batched at the end of a
reconcile round). The next adapter with the same id finds it when it takes stock and keeps it for the task's
re-send. When Scaler did get the result, that re-send never comes, and the object would stay until the bucket's
lifecycle rule. Results under the prefix may belong to other adapters sharing it, so after the grace each unclaimed
one's signed header is read (never its body) and only those written by a job of this adapter id (a job found by
name when stock was taken) are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable

from scaler_aws_batch.engine.ledger import Ledger
from scaler_aws_batch.errors import ResultRejectedError, StoreError
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores.base import ObjectStore
from scaler_aws_batch.wire import decode_result, result_key

logger = logging.getLogger(__name__)


class LeftoverResults:
    def __init__(self, store: ObjectStore, keys: KeyRing, results: ResultIO, ledger: Ledger) -> None:
        self._store, self._keys, self._results, self._ledger = store, keys, results, ledger
        self._due: dict[str, float] = {}  # task id -> when its grace ends
        self._own_jobs: frozenset[str] = frozenset()

    def note(self, task_ids: Iterable[str], own_job_ids: frozenset[str], deadline: float) -> None:
        """Results found at start (kept for their tasks' re-send), and every job found under this adapter's name."""
        self._own_jobs = own_job_ids
        self._due.update(dict.fromkeys(task_ids, deadline))

    async def sweep(self, now: float) -> int:
        """Delete the results whose grace ended, whose task was not sent again, and that a job of this adapter
        wrote. Returns how many."""
        due = [task_id for task_id, deadline in self._due.items() if deadline <= now]
        for task_id in due:
            del self._due[task_id]
        # A task sent again took its result (and it left ``stored``); a kept result of this run has a finite grace.
        unclaimed = [task_id for task_id in due if self._ledger.stored.get(task_id) == math.inf]
        if not unclaimed:
            return 0
        owned = await asyncio.to_thread(self._written_by_own_jobs, unclaimed)
        for task_id in owned:
            del self._ledger.stored[task_id]
            self._results.discard(result_key(task_id))
        if owned:
            logger.info("deleting %d result(s) an earlier run of this adapter left (their tasks were not sent again); "
                        "%d other unclaimed result(s) kept", len(owned), len(unclaimed) - len(owned))  # fmt: skip
        return len(owned)

    def _written_by_own_jobs(self, task_ids: list[str]) -> list[str]:
        owned: list[str] = []
        for task_id in task_ids:
            try:
                data = self._store.get(result_key(task_id))
                envelope = decode_result(data, self._keys, expected_task_id=task_id, expected_nonce=None)
            except StoreError:
                continue  # gone meanwhile, or unreadable now: the lifecycle rule remains
            except ResultRejectedError:
                continue  # not provably ours: never deleted here
            if envelope.job_id.split(":", 1)[0] in self._own_jobs:
                owned.append(task_id)
        return owned
