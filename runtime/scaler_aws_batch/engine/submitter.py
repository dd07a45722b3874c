"""The submitter: plan a group's payload, upload what must be stored, submit the job, and after an ambiguous
failure take the earlier submission instead of making a second one. It returns what happened; the engine applies it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Mapping, Sequence

from scaler_aws_batch.backends.base import JobBackend, JobSpec
from scaler_aws_batch.contracts import JobTag, job_name_prefix
from scaler_aws_batch.engine.ledger import TaskRecord
from scaler_aws_batch.engine.payload import UploadCache, plan_payload
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.work import Clock, TaskWork
from scaler_aws_batch.errors import (
    BackendError,
    BackendUnavailableError,
    StoreError,
    StoreUnavailableError,
    SubmitError,
)
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Submitted:
    job_id: str
    transport: str
    uploads: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Refused:
    """The backend or store refused the job for good: every task fails with ``error``."""

    error: SubmitError


@dataclasses.dataclass(frozen=True)
class Transient:
    """Throttling, a server error, expired credentials: see :func:`transient_decision`."""

    error: BackendUnavailableError | StoreUnavailableError


@dataclasses.dataclass(frozen=True)
class Requeue:
    """What to do with the tasks of a submission that met a transient error."""

    failed: dict[str, SubmitError]  # past their submit deadline: fail them with these errors
    retry: list[str]  # put these back, to come due after ``delay`` seconds
    delay: float


class Submitter:
    def __init__(
        self,
        backend: JobBackend,
        store: ObjectStore,
        settings: EngineSettings,
        keys: KeyRing,
        uploads: UploadCache,
        clock: Clock,
    ) -> None:
        self._backend = backend
        self._store = store
        self._settings = settings
        self._keys = keys
        self._uploads = uploads
        self._clock = clock

    def spec_for(self, works: Sequence[TaskWork]) -> JobSpec:
        # The name is decided by the tasks, before SubmitJob: a job whose SubmitJob was in flight when the adapter
        # died is still found by its name prefix, and mapped to its tasks by its payload.
        first, count = works[0].task_id, len(works)
        return JobSpec(
            name=f"{job_name_prefix(self._settings.adapter_id)}{first[:32]}" + (f"-x{count}" if count > 1 else ""),
            payload="",
            resources=works[0].resources,
            timeout_seconds=works[0].timeout_seconds or self._settings.job_timeout_seconds,
            tags={**self._settings.user_tags, JobTag.ADAPTER_ID: self._settings.adapter_id, JobTag.TASK_ID: first,
                  JobTag.TASK_COUNT: str(count)},
            array_size=count if count > 1 else None,
            queue=works[0].queue,
            task_ids=tuple(work.task_id for work in works),
        )  # fmt: skip

    def prepare_and_submit(self, works: Sequence[TaskWork], nonce: str, maybe_submitted: bool = False) -> Submitted:
        """Blocking: plan the payload, upload what must be stored, submit. Runs in a worker thread. After an
        ambiguous failure (``maybe_submitted``: a 5xx or a lost connection), a live job of the same name is the
        earlier submission, and is taken instead of submitting a second one."""
        spec = self.spec_for(works)
        if maybe_submitted:
            for listed in self._backend.find_jobs(spec.name, (spec.queue,)):
                if listed.name == spec.name and not listed.state.is_final:
                    logger.info("job %s (%s) was submitted despite the error; using it", listed.job_id, spec.name)
                    return Submitted(listed.job_id, "earlier submission", ())
        plan = plan_payload(
            [work.blobs for work in works], spec=spec, backend=self._backend, store_url=self._store.url,
            settings=self._settings, keys=self._keys, nonce=nonce,
        )  # fmt: skip
        self._uploads.upload(self._store, plan.uploads, self._clock())
        job_id = self._backend.submit(dataclasses.replace(spec, payload=plan.parameter))
        return Submitted(job_id, plan.transport, tuple(plan.uploads))

    async def submit(
        self, works: Sequence[TaskWork], nonce: str, maybe_submitted: bool
    ) -> Submitted | Refused | Transient:
        try:
            return await asyncio.to_thread(self.prepare_and_submit, works, nonce, maybe_submitted)
        except (BackendUnavailableError, StoreUnavailableError) as exc:
            return Transient(exc)
        except (BackendError, StoreError, ValueError) as exc:
            logger.error("submitting %d task(s) failed: %s", len(works), exc)
            return Refused(SubmitError(f"{self._backend.name} refused the job: {exc}"))

    def transient_decision(
        self,
        tasks: Mapping[str, TaskRecord],
        exc: BackendUnavailableError | StoreUnavailableError,
        now: float,
        attempt: int,
        jitter: Callable[[], float] = random.random,
    ) -> Requeue:
        """A transient failure: put the tasks back with backoff until their submit deadline, then fail them with the
        hint of the error class (throttling says "lower the rate", a 5xx says "AWS's side, retry later").
        ``attempt`` counts the requeues so far (the backoff grows with it). Marks the tasks maybe submitted after an
        ambiguous failure."""
        hint = exc.hint if isinstance(exc, BackendUnavailableError) else ""
        ambiguous = isinstance(exc, BackendUnavailableError) and exc.maybe_applied
        failed: dict[str, SubmitError] = {}
        retry: list[str] = []
        for task_id, task in tasks.items():
            task.maybe_submitted |= ambiguous
            if (task.submit_deadline or now) <= now:
                failed[task_id] = SubmitError(
                    f"{self._backend.name} could not accept the job for "
                    f"{self._settings.submit_deadline_seconds:.0f}s: {exc}"
                    + (f" ({hint})" if hint and hint not in str(exc) else "")
                )
            else:
                retry.append(task_id)
        delay = min(30.0, 0.5 * 2 ** min(attempt, 6)) * (0.5 + jitter() / 2)  # jittered
        return Requeue(failed=failed, retry=retry, delay=delay)
