"""The resolver: read and check a finished task's result; a failed job without one becomes the error the user sees;
after enough Spot reclaims the task goes to the On-Demand queue instead. It returns a decision; the reconciler
applies it.

A result object is read from the store, its signature and its nonce (which binds it to this submission) checked,
and handed over as bytes, never unpickled.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import pickle

from scaler_aws_batch.backends.base import JobBackend, JobState, JobStatus
from scaler_aws_batch.contracts import SPOT_INTERRUPTION_PREFIXES
from scaler_aws_batch.engine.accounting import UsageAccounts
from scaler_aws_batch.engine.failures import classify_failure
from scaler_aws_batch.engine.ledger import JobRecord, Ledger, TaskRecord, Tentative
from scaler_aws_batch.engine.payload import UploadCache
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.work import Clock, TaskOutcome, TaskWork
from scaler_aws_batch.errors import (
    JobFailedError,
    ObjectMissingError,
    PayloadRejectedError,
    ResultFromAnotherSubmissionError,
    ResultMissingError,
    ResultRejectedError,
    StoreError,
    StoreUnavailableError,
)
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore
from scaler_aws_batch.usage import JobUsage, Outcome
from scaler_aws_batch.wire import decode_result, result_key

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Finish:
    outcome: TaskOutcome


@dataclasses.dataclass(frozen=True)
class PutBack:
    """A listed result was refused or is gone: the task waits in its job again; the job's final state decides."""

    job: JobRecord
    index: int | None


@dataclasses.dataclass(frozen=True)
class MoveToOnDemand:
    """Queue the task again, for the On-Demand queue (its record already names it)."""

    work: TaskWork


Decision = Finish | PutBack | MoveToOnDemand | None  # None: nobody waits for the task any more


class Resolver:
    def __init__(
        self,
        *,
        backend: JobBackend,
        store: ObjectStore,
        results: ResultIO,
        settings: EngineSettings,
        keys: KeyRing,
        ledger: Ledger,
        accounts: UsageAccounts,
        uploads: UploadCache,
        clock: Clock,
    ) -> None:
        self._backend = backend
        self._store = store
        self._results = results
        self._settings = settings
        self._keys = keys
        self._ledger = ledger
        self._accounts = accounts
        self._uploads = uploads
        self._clock = clock
        self.read_results: collections.deque[tuple[float, str]] = collections.deque()  # (read at, task id)

    def due_for_deletion(self, now: float) -> set[str]:
        """Task ids whose results were handed over at least ``result_delete_delay_seconds`` before ``now``."""
        due: set[str] = set()
        while self.read_results and now - self.read_results[0][0] >= self._settings.result_delete_delay_seconds:
            due.add(self.read_results.popleft()[1])
        return due

    def read_result(
        self, task_id: str, status: JobStatus, any_submission: bool = False
    ) -> tuple[TaskOutcome, JobUsage] | None:
        """Blocking: fetch and check the result object (signature, task, and this submission's nonce when the
        adapter submitted the job, unless ``any_submission``); None when there is none. With the outcome, what the
        runner measured for the usage log. Raises ResultRejectedError."""
        key = result_key(task_id)
        try:
            data = self._store.get(key)
        except ObjectMissingError:
            return None
        task = self._ledger.tasks.get(task_id)
        nonce = task.nonce if task is not None and task.nonce and not any_submission else None
        envelope = decode_result(data, self._keys, expected_task_id=task_id, expected_nonce=nonce)
        self._uploads.forget(envelope.bad_objects)
        if self._settings.delete_results:
            self.read_results.append((self._clock(), task_id))  # deleted once handed over (see settings)
        logger.info("task %s: %s from job %s attempt %d (ran %.3fs)", task_id, envelope.status, status.job_id,
                    envelope.attempt, envelope.duration_seconds)  # fmt: skip
        ran = envelope.started_at is not None and envelope.stopped_at is not None
        measured = JobUsage(
            compute=self._backend.compute_kind(envelope.compute_environment),
            compute_environment=envelope.compute_environment,
            attempts=envelope.attempt,
            started_at=envelope.started_at,
            stopped_at=envelope.stopped_at,
            run_seconds=max(0.0, (envelope.stopped_at or 0.0) - (envelope.started_at or 0.0)) if ran else 0.0,
        )
        return TaskOutcome(envelope.status == "success", envelope.body), measured

    async def resolve(self, task_id: str, status: JobStatus, *, tentative: Tentative | None = None) -> Decision:
        """Finish the task from its result or from the job's failure. With ``tentative`` (a task whose result was
        listed, its job not described), a result that fails its checks, or is gone, puts the task back into its
        job instead: the job's own final state decides."""
        task = self._ledger.tasks.get(task_id)
        if task is None:
            return None
        pause = 0.5
        read: tuple[TaskOutcome, JobUsage] | None = None
        outcome: TaskOutcome | None = None
        any_submission = False
        while True:
            try:
                read = await self._results.call(self.read_result, task_id, status, any_submission)
            except StoreUnavailableError as exc:  # throttled (SlowDown), 5xx, credentials: read it again later
                logger.warning("task %s: reading its result failed, retrying in %.1fs: %s", task_id, pause, exc)
                self._ledger.stats["result:retried"] += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                if task_id not in self._ledger.tasks:
                    return None
                continue
            except StoreError as exc:
                outcome = TaskOutcome(False, pickle.dumps(exc))
            except ResultFromAnotherSubmissionError as exc:
                if tentative is not None:  # its own job may still write its own: the job's final state decides
                    logger.warning("task %s: result of job %s refused: %s", task_id, status.job_id, exc)
                    return PutBack(*tentative)
                # The job ended and a genuinely signed result of this very task is stored: another submission of it
                # ran at the same time (Scaler sent the task again to another adapter) and wrote last. It is a
                # result of the same function and arguments; failing the task instead would lose it.
                logger.warning("task %s: job %s ended; the stored result was written by another submission of the "
                               "same task, which ran at the same time: taking it", task_id, status.job_id)  # fmt: skip
                self._ledger.stats["result:other-submission"] += 1
                any_submission = True
                continue
            except ResultRejectedError as exc:
                logger.warning("task %s: result of job %s refused: %s", task_id, status.job_id, exc)
                if tentative is not None:
                    return PutBack(*tentative)
                outcome = TaskOutcome(False, pickle.dumps(exc))
            break
        if read is None and outcome is None and tentative is not None:  # listed, then gone: the job decides
            return PutBack(*tentative)
        if read is not None:
            outcome, measured = read
            kind = Outcome.SUCCESS if outcome.success else Outcome.TASK_ERROR
            self._accounts.record_resolved(task_id, status, kind, measured, tentative)
            return Finish(outcome)
        if outcome is None:
            return await self._without_result(task, status)
        self._accounts.record_failed(task_id, status)
        return Finish(outcome)

    async def _without_result(self, task: TaskRecord, status: JobStatus) -> Decision:
        """A final job left no result: a SUCCEEDED one lost it; a failed one is classified, or moved to On-Demand."""
        task_id = task.work.task_id
        if status.state is JobState.SUCCEEDED:
            error: JobFailedError = ResultMissingError(
                f"job {status.job_id} SUCCEEDED but its result {result_key(task_id)} is missing from "
                f"{self._store.url}; check that nothing else (a lifecycle rule, another adapter) deletes "
                "objects under this prefix",
                status.job_id,
                status.exit_code,
            )
        elif self.moves_to_on_demand(task, status):
            self._accounts.record_failed(task_id, status)  # its Spot attempts
            return MoveToOnDemand(task.work)
        else:
            tail = await asyncio.to_thread(self._backend.log_tail, status.job_id, self._settings.log_tail_lines)
            error = classify_failure(status, tail)
            if isinstance(error, PayloadRejectedError):
                self._uploads.forget(task.uploads)
        logger.warning("task %s: %s", task_id, str(error).splitlines()[0])
        self._accounts.record_failed(task_id, status)
        return Finish(TaskOutcome(False, pickle.dumps(error)))

    def moves_to_on_demand(self, task: TaskRecord, status: JobStatus) -> bool:
        """After enough Spot reclaims, the task's next attempt goes to the On-Demand queue instead of failing: its
        record is changed to say so (the caller queues it again)."""
        task.spot_reclaims += status.spot_reclaims
        on_demand = self._settings.on_demand_queue
        reclaimed = (status.status_reason or "").startswith(SPOT_INTERRUPTION_PREFIXES)
        if (
            on_demand is None
            or not reclaimed
            or task.work.queue == on_demand
            or task.spot_reclaims < self._settings.spot_reclaims_before_on_demand
        ):
            return False
        logger.warning("task %s: %d Spot reclaims (job %s); its next attempt goes to the On-Demand queue %s",
                       task.work.task_id, task.spot_reclaims, status.job_id, on_demand)  # fmt: skip
        task.work = dataclasses.replace(task.work, queue=on_demand)
        task.job_id, task.state = None, None
        self._ledger.stats["moved-to-on-demand"] += 1
        return True
