"""Stopping jobs: one at a time (a cancelled task, an expired grace, a vanished job) or all of them at shutdown,
``parallel`` calls at a time within a deadline.

At shutdown the pace is the backend's stop budget (:attr:`JobBackend.stop_jobs_per_second`), not the number of calls
in flight: enough calls run at once that their latency never slows the pace, arrays first (one call stops a whole
array). The time that takes is known in advance (:func:`stop_bound_seconds`), so a supervisor can be told how long
to wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections.abc import Collection, Mapping
from typing import Final

from scaler_aws_batch.backends.base import JobBackend, JobState
from scaler_aws_batch.contracts import job_name_prefix
from scaler_aws_batch.engine.work import Clock
from scaler_aws_batch.errors import BackendError
from scaler_aws_batch.reattach import ShutdownReport

logger = logging.getLogger(__name__)

#: Headroom of the shutdown bound over the paced calls themselves: the last calls' latency and a few throttled retries.
STOP_BOUND_MARGIN_SECONDS: Final = 10.0
#: Stop calls in flight per call per second of budget: a call may take 2 s under load without slowing the pace.
_IN_FLIGHT_PER_RATE: Final = 2.0
_MIN_PARALLEL: Final = 4


def stop_bound_seconds(job_count: int, jobs_per_second: float) -> float:
    """How long stopping ``job_count`` jobs takes at most, at ``jobs_per_second`` (the backend's stop budget)."""
    if job_count <= 0:
        return 0.0
    return math.ceil(job_count / jobs_per_second) + STOP_BOUND_MARGIN_SECONDS


def stop_parallelism(job_count: int, jobs_per_second: float) -> int:
    """Stop calls in flight at once: enough to use the whole budget, never more than there are jobs."""
    return max(1, min(job_count, max(_MIN_PARALLEL, math.ceil(jobs_per_second * _IN_FLIGHT_PER_RATE))))


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
        self,
        jobs: Mapping[str, JobState | None],
        deadline: float,
        parallel: int,
        report: ShutdownReport,
        arrays: Collection[str] = (),
    ) -> None:
        """Stop every job in ``jobs``, the ``arrays`` among them first, ``parallel`` calls at a time (on threads of
        their own: the default pool is a handful of threads); those not reached by ``deadline`` (by the clock) go to
        ``report.failed`` unasked."""
        queue: asyncio.Queue[tuple[str, JobState | None]] = asyncio.Queue()
        for item in sorted(jobs.items(), key=lambda item: item[0] not in arrays):
            queue.put_nowait(item)
        loop = asyncio.get_running_loop()

        async def stopper(pool: concurrent.futures.Executor) -> None:
            while not queue.empty():
                job_id, state = queue.get_nowait()
                if self._clock() > deadline:
                    report.failed.append(job_id)
                    continue
                try:
                    await loop.run_in_executor(
                        pool, self._backend.cancel, job_id, state, "The Scaler adapter shut down"
                    )
                    report.stopped.append(job_id)
                except BackendError as exc:
                    logger.error("shutdown: stopping job %s failed: %s", job_id, exc)
                    report.failed.append(job_id)

        workers = max(1, min(parallel, len(jobs)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stop-job") as pool:
            await asyncio.gather(*(stopper(pool) for _ in range(workers)))

    async def stop_at_shutdown(
        self, jobs: Mapping[str, JobState | None], arrays: Collection[str], deadline: float, timeout_seconds: float,
        adapter_id: str, report: ShutdownReport,
    ) -> None:  # fmt: skip
        """Stop every job at shutdown, arrays first, at the backend's stop budget until ``deadline``; log the bound
        the job count implies, what was stopped, and, loudly, what is handed over to the next adapter of this id."""
        rate = self._backend.stop_jobs_per_second
        bound = stop_bound_seconds(len(jobs), rate)
        left = max(0.0, deadline - self._clock())
        logger.info("shutdown: stopping %d job(s) (%d array(s), %d single), expected within %.0f s (%.0f stops per "
                    "second)", len(jobs), len(arrays), len(jobs) - len(arrays), bound, rate)  # fmt: skip
        if bound > left:
            logger.warning("shutdown: stopping %d job(s) takes up to %.0f s but --shutdown-timeout leaves %.0f s: "
                           "raise --shutdown-timeout to at least %.0f s", len(jobs), bound, left,
                           math.ceil(timeout_seconds - left + bound))  # fmt: skip
        await self.stop_all(jobs, deadline, stop_parallelism(len(jobs), rate), report, arrays)
        logger.info("shutdown: stopped %d job(s)%s%s", len(report.stopped),
                    f": {', '.join(sorted(report.stopped))}" if report.stopped else "",
                    f"; could NOT stop {len(report.failed)}: {', '.join(sorted(report.failed))}" if report.failed
                    else "")  # fmt: skip
        if report.failed:
            logger.error("shutdown: %d job(s) left running, handed over: the next adapter with --adapter-id %s "
                         "re-attaches to them and stops them after its --reattach-grace (or adopts them if Scaler "
                         "sends their tasks again); to stop them now, see 'Clean shutdown' in docs/reliability.md "
                         "(jobs named %s*)", len(report.failed), adapter_id, job_name_prefix(adapter_id))  # fmt: skip
