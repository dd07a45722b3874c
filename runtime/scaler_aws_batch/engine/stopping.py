"""Stopping jobs: one at a time (a cancelled task, an expired grace, a vanished job) or all of them at shutdown,
``parallel`` calls at a time within a deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from scaler_aws_batch.backends.base import JobBackend, JobState
from scaler_aws_batch.engine.work import Clock
from scaler_aws_batch.errors import BackendError
from scaler_aws_batch.reattach import ShutdownReport

logger = logging.getLogger(__name__)


class JobStopper:
    def __init__(self, backend: JobBackend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock

    async def stop(
        self, task_id: str, job_id: str, state: JobState | None, reason: str = "Cancelled by the Scaler client"
    ) -> None:
        """Ask the backend to stop ``job_id`` (for ``task_id``, named in the log); a failure is logged, not raised."""
        try:
            await asyncio.to_thread(self._backend.cancel, job_id, state, reason)
            logger.info("task %s: cancelled job %s (last state %s)", task_id, job_id, state.value if state else "-")
        except BackendError as exc:
            logger.warning("task %s: cancelling job %s failed: %s", task_id, job_id, exc)

    async def stop_all(
        self, jobs: Mapping[str, JobState | None], deadline: float, parallel: int, report: ShutdownReport
    ) -> None:
        """Stop every job in ``jobs``, ``parallel`` calls at a time; those not reached by ``deadline`` (by the
        clock) go to ``report.failed`` unasked."""
        queue: asyncio.Queue[tuple[str, JobState | None]] = asyncio.Queue()
        for item in jobs.items():
            queue.put_nowait(item)

        async def stopper() -> None:
            while not queue.empty():
                job_id, state = queue.get_nowait()
                if self._clock() > deadline:
                    report.failed.append(job_id)
                    continue
                try:
                    await asyncio.to_thread(self._backend.cancel, job_id, state, "The Scaler adapter shut down")
                    report.stopped.append(job_id)
                except BackendError as exc:
                    logger.error("shutdown: stopping job %s failed: %s", job_id, exc)
                    report.failed.append(job_id)

        await asyncio.gather(*(stopper() for _ in range(parallel)))
