"""The reconcile loop: one loop for all jobs.

Each round lists the results prefix once (store calls, no backend call) and resolves every task whose result is
there, single job or array child. Describe calls (in chunks of at most ``backend.max_describe_batch``) come less
often, backing off to ``describe_interval_max_seconds``: they report what results cannot (jobs failed without a
result, RUNNABLE jobs, the usage log). Array parents are read through their status summary; children are described
only when some failed. Vanished jobs fail their tasks and are stopped (:mod:`.watch`); tasks not sent again within
the re-attach grace have their jobs stopped.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Iterator, Sequence

from scaler_aws_batch.backends.base import JobBackend, JobState, JobStatus
from scaler_aws_batch.engine.accounting import UsageAccounts
from scaler_aws_batch.engine.ledger import SCALER_RESTARTED_REASON, JobRecord, Ledger, Tentative
from scaler_aws_batch.engine.leftovers import LeftoverResults
from scaler_aws_batch.engine.packer import Packer
from scaler_aws_batch.engine.resolver import Finish, MoveToOnDemand, PutBack, Resolver
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.stopping import JobStopper
from scaler_aws_batch.engine.watch import runnable_overdue, vanish_clock, vanished_errors
from scaler_aws_batch.engine.work import Clock, TaskOutcome
from scaler_aws_batch.errors import BackendError, StoreError
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.stores import ObjectStore
from scaler_aws_batch.wire import RESULTS_PREFIX, result_key

logger = logging.getLogger(__name__)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Reconciler:
    def __init__(
        self,
        *,
        backend: JobBackend,
        store: ObjectStore,
        results: ResultIO,
        settings: EngineSettings,
        ledger: Ledger,
        accounts: UsageAccounts,
        resolver: Resolver,
        stopper: JobStopper,
        packer: Packer,
        clock: Clock,
        leftovers: LeftoverResults | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._results = results
        self._settings = settings
        self._ledger = ledger
        self._accounts = accounts
        self._resolver = resolver
        self._stopper = stopper
        self._packer = packer
        self._clock = clock
        self._leftovers = leftovers
        self.wake = asyncio.Event()
        self._resolving: set[asyncio.Task[None]] = set()  # results being read: the reconcile loop does not wait
        self._describe_due = 0.0  # when the next describe call is made (reconcile rounds list results meanwhile)
        self._describe_interval = settings.poll_interval_min_seconds

    async def run(self) -> None:
        interval = self._settings.poll_interval_min_seconds
        while True:
            if not self._ledger.jobs and not self._accounts.owed:
                self.wake.clear()
                # Read results are still deleted and unclaimed ones still expire while no job runs.
                idle = self._settings.result_delete_delay_seconds if self._resolver.read_results else None
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=idle or self._settings.reattach_grace_seconds)
                except asyncio.TimeoutError:
                    await self.expire_awaiting(self._clock())
                    self._results.flush()
                    continue
                interval = self._settings.poll_interval_min_seconds
                # Jobs again after an idle spell: describe them soon, then less and less often.
                self._describe_due, self._describe_interval = 0.0, interval
            # The next round, no later than the next grace ends: a grace cut short by a restart frees compute on time.
            until_deadline = max(0.0, self._ledger.next_deadline() - self._clock())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=min(interval, until_deadline))
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            await self.expire_awaiting(self._clock())
            changed = await self.reconcile_once()
            self._results.flush()
            if changed:
                interval = self._settings.poll_interval_min_seconds
            else:
                interval = min(interval * 1.5, self._settings.poll_interval_max_seconds)

    async def reconcile_once(self) -> bool:
        """One round: results first (one store listing, no backend call), then a describe call when it is due."""
        changed = await self.resolve_listed()
        now = self._clock()
        if now >= self._describe_due:
            eventful = await self.describe_round(now)
            changed |= eventful
            # Describe calls report what results cannot (failures, RUNNABLE, usage): often while that happens,
            # rarely while results keep arriving through the listings.
            if eventful:
                self._describe_interval = self._settings.poll_interval_min_seconds
            else:
                self._describe_interval = min(self._describe_interval * 2, self._settings.describe_interval_max_seconds)
            self._describe_due = self._clock() + self._describe_interval
        return changed

    # --- the re-attach grace and result deletion ----------------------------------------------------------------

    def delete_read_results(self, now: float) -> None:
        self._delete_results(self._resolver.due_for_deletion(now))

    async def expire_awaiting(self, now: float) -> None:
        """Stop the jobs (or array children) of tasks that were not sent again within the grace period; delete the
        results read a while ago."""
        self.delete_read_results(now)
        expiry = self._ledger.expire(now, self._settings.delete_results)
        for target, state in expiry.stop:
            if target in expiry.after_restart:
                await self._stopper.stop("(Scaler restarted)", target, state, SCALER_RESTARTED_REASON)
            else:
                await self._stopper.stop("(not sent again)", target, state, "Its Scaler task was not sent again")
        self._ledger.stats["grace-stopped"] += expiry.stopped_tasks
        self._delete_results(expiry.delete)
        if self._leftovers is not None and self._settings.delete_results:
            self._ledger.stats["leftovers-deleted"] += await self._leftovers.sweep(now)

    def _delete_results(self, task_ids: set[str]) -> None:
        for task_id in task_ids:
            self._results.discard(result_key(task_id))  # batched: DeleteObjects at the end of the round

    # --- results listed -----------------------------------------------------------------------------------------

    async def resolve_listed(self) -> bool:
        """Resolve every task whose result object is listed, single job or array child, without a backend call.
        Tentative: a result that fails its checks (planted before the job ran, left by an earlier run) puts the task
        back into its job, and the job's own final state decides."""
        if not self._ledger.has_listable():
            return False
        try:
            listing = await asyncio.to_thread(self._store.list_keys, RESULTS_PREFIX)
        except StoreError as exc:
            logger.warning("listing results failed, will retry: %s", exc)
            return False
        progressed = False
        emptied: dict[str, JobRecord] = {}
        for key in listing:
            task_id = key[len(RESULTS_PREFIX) :]
            home = self._ledger.home_of(task_id)
            if home is None:
                continue
            job, index = home
            if task_id in self._ledger.awaiting:  # nobody asked yet: keep the result for the re-send
                self._ledger.keep_stored(task_id)
            else:
                child = JobStatus(job_id=job.target(index), state=JobState.SUCCEEDED)
                self.start_resolve(task_id, child, tentative=(job, index))
            self._ledger.unplace(job, index)
            job.ok_resolved += 1
            progressed = True
            if not job.tasks:
                emptied[job.job_id] = job
        for job in emptied.values():
            self._untrack(job)
        return progressed

    def _untrack(self, job: JobRecord) -> None:
        self._ledger.jobs.pop(job.job_id, None)
        self._accounts.owe(job)

    # --- describes ----------------------------------------------------------------------------------------------

    async def describe(self, job_ids: Sequence[str]) -> tuple[dict[str, JobStatus], set[str]]:
        """Statuses, and the ids whose describe call was answered (a job missing from an answered call is unknown
        to the backend; one whose call failed is merely unseen)."""
        statuses: dict[str, JobStatus] = {}
        answered: set[str] = set()
        for chunk in _chunks(job_ids, self._backend.max_describe_batch):
            try:
                statuses.update(await asyncio.to_thread(self._backend.describe, chunk))
                answered.update(chunk)
            except BackendError as exc:
                # Throttled past the call layer's retries, expired credentials, an outage: skip this round.
                logger.warning("describe of %d job(s) failed, will retry: %s", len(chunk), exc)
                self._ledger.stats["describe:failed"] += 1
        return statuses, answered

    async def describe_round(self, now: float) -> bool:
        """Describe every tracked job (and those still owed a usage describe): state changes, RUNNABLE jobs,
        vanished jobs, and tasks whose jobs failed without a result. True when something happened that the next
        describe should follow closely."""
        owed = [job_id for job_id in self._accounts.owed if job_id not in self._ledger.jobs]
        statuses, answered = await self.describe([*self._ledger.jobs, *owed])
        eventful = False
        for job in list(self._ledger.jobs.values()):
            status = statuses.get(job.job_id)
            if vanish_clock(job, answered=job.job_id in answered, reported=status is not None, now=now,
                            bound_seconds=self._settings.vanish_bound_seconds):  # fmt: skip
                await self._vanish(job)
                eventful = True
            if status is None:
                continue
            if status.state is not job.state:
                logger.info("job %s: %s -> %s", job.job_id, job.state.value if job.state else "-", status.state.value)
                job.state = status.state
            self._accounts.note(job, status)
            if runnable_overdue(job, status, now, self._settings.runnable_warn_seconds):
                await self._explain_runnable(job, now)
            if None in job.tasks:
                eventful |= self._single_job_described(job, status)
            else:
                eventful |= await self._reconcile_array(job, status)
        for job_id in owed:
            owed_job = self._accounts.owed.get(job_id)  # a refused result may have put it back meanwhile
            if owed_job is not None and job_id in answered:
                self._accounts.described_owed(owed_job, statuses.get(job_id))
        return eventful

    def _single_job_described(self, job: JobRecord, status: JobStatus) -> bool:
        task_id = job.tasks[None]
        task = self._ledger.tasks.get(task_id)
        if task is not None:
            task.state = status.state
        if not status.state.is_final:
            return False
        if task_id in self._ledger.awaiting:  # nobody asked yet: keep the result for the re-send
            self._ledger.keep_stored(task_id)
        else:
            self.start_resolve(task_id, status)
        self._ledger.drop_job(job)
        return True

    async def _reconcile_array(self, job: JobRecord, parent: JobStatus) -> bool:
        """Array children whose results were not listed: describe them only when the parent's summary counts
        more failures than resolved, or the parent is final (a failure carries a reason and logs)."""
        summary = parent.array_summary or {}
        progressed = False
        for index, task_id in list(job.tasks.items()):
            if task_id not in self._ledger.tasks and task_id not in self._ledger.awaiting:  # cancelled: FAILED
                self._ledger.unplace(job, index)
                job.failed_resolved += 1
        if job.tasks and (summary.get(JobState.FAILED, 0) > job.failed_resolved or parent.state.is_final):
            statuses, _ = await self.describe([job.target(index) for index in job.tasks if index is not None])
            for index, task_id in list(job.tasks.items()):
                status = statuses.get(job.target(index))
                if status is None or not status.state.is_final:
                    continue
                if task_id in self._ledger.awaiting:
                    self._ledger.keep_stored(task_id)
                else:
                    self.start_resolve(task_id, status)
                self._ledger.unplace(job, index)
                if status.state is JobState.SUCCEEDED:
                    job.ok_resolved += 1
                else:
                    job.failed_resolved += 1
                progressed = True
        if not job.tasks:
            self._untrack(job)
        return progressed

    async def _explain_runnable(self, job: JobRecord, now: float) -> None:
        """Log once, with the backend's diagnosis, a job that has waited in RUNNABLE longer than the bound."""
        try:
            diagnosis = await asyncio.to_thread(self._backend.explain_runnable, job.queue, job.resources)
        except BackendError as exc:
            diagnosis = f"the queue could not be described ({exc})"
        logger.warning("job %s has been RUNNABLE for %.0fs (--runnable-warn-after %.0fs): %s", job.job_id,
                       now - (job.runnable_since or now), self._settings.runnable_warn_seconds,
                       diagnosis or "no diagnosis from this backend")  # fmt: skip
        self._ledger.stats["runnable-explained"] += 1

    async def _vanish(self, job: JobRecord) -> None:
        logger.error("job %s: %s answered without it for %.0fs; failing its tasks and stopping it", job.job_id,
                     self._backend.name, job.missing_seconds)  # fmt: skip
        self._ledger.drop_job(job)
        errors = vanished_errors(job, self._backend.name, self._settings.vanish_bound_seconds)
        for task_id, error in errors.items():
            self._ledger.forget_awaiting(task_id)
            self._ledger.finish(task_id, TaskOutcome(False, pickle.dumps(error)))
        # Stop it anyway, in case it still runs somewhere the backend no longer reports.
        await self._stopper.stop("(vanished)", job.job_id, None, "Vanished from the adapter's view")

    # --- resolving ----------------------------------------------------------------------------------------------

    def start_resolve(self, task_id: str, status: JobStatus, *, tentative: Tentative | None = None) -> None:
        """Read the task's result in the background: concurrent with other reads and with the next round."""
        resolving = asyncio.create_task(self._resolve(task_id, status, tentative), name=f"resolve-{task_id[:12]}")
        self._resolving.add(resolving)
        resolving.add_done_callback(self._resolved)

    async def _resolve(self, task_id: str, status: JobStatus, tentative: Tentative | None) -> None:
        decision = await self._resolver.resolve(task_id, status, tentative=tentative)
        if isinstance(decision, Finish):
            self._ledger.finish(task_id, decision.outcome)
        elif isinstance(decision, PutBack):
            self._ledger.put_back(task_id, decision.job, decision.index)
            self._accounts.forgive(decision.job.job_id)
            self._describe_due = 0.0  # the job's describe decides now: do not wait for the backed-off interval
            self.wake.set()
        elif isinstance(decision, MoveToOnDemand):
            self._packer.add(decision.work.pack_key(), task_id, self._clock())

    def _resolved(self, resolving: asyncio.Task[None]) -> None:
        self._resolving.discard(resolving)
        if self._resolver.read_results and not self._ledger.jobs and not self._accounts.owed:
            # An idle reconcile loop must come round to delete it. A busy one comes round within its interval: waking
            # it here would list the results prefix again after every burst of reads (8 listings a second at 10,000
            # tasks, each serializing up to 1,000 keys).
            self.wake.set()
        if not resolving.cancelled() and resolving.exception() is not None:
            logger.error("%s crashed; its task got no result", resolving.get_name(), exc_info=resolving.exception())
        if not self._resolving:
            self._results.flush()  # the burst of reads is over: delete its results now, in as few calls as possible
