"""The engine's facade: it wires the parts and is what the adapter calls (submit, cancel, run, take_stock, shutdown).

Data flows one way: the facade feeds tasks to the packer, applies the submitter's decisions to the ledger, and runs
the packer loop and the reconcile loop; no part imports the facade.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import pickle
import time
from collections.abc import Sequence

from scaler_aws_batch.backends.base import JobBackend, JobState, JobStatus
from scaler_aws_batch.engine.accounting import UsageAccounts
from scaler_aws_batch.engine.ledger import Ledger, TaskRecord
from scaler_aws_batch.engine.leftovers import LeftoverResults
from scaler_aws_batch.engine.packer import Packer
from scaler_aws_batch.engine.payload import UploadCache, new_nonce
from scaler_aws_batch.engine.reconciler import Reconciler
from scaler_aws_batch.engine.resolver import Resolver
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.stocktaking import StockTaker
from scaler_aws_batch.engine.stopping import JobStopper
from scaler_aws_batch.engine.submitter import Refused, Submitted, Submitter, Transient
from scaler_aws_batch.engine.work import Clock, TaskOutcome, TaskWork
from scaler_aws_batch.errors import ResultRejectedError, StoreError
from scaler_aws_batch.reattach import FoundJob, ShutdownReport, Stock
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore
from scaler_aws_batch.usage import UsageRecorder

logger = logging.getLogger(__name__)


class JobEngine:
    def __init__(
        self,
        backend: JobBackend,
        store: ObjectStore,
        settings: EngineSettings,
        keys: KeyRing,
        usage: UsageRecorder | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._backend = backend
        self._store = store
        self._settings = settings
        self._keys = keys
        self._clock = clock
        self._ledger = Ledger()
        self.stats: collections.Counter[str] = self._ledger.stats
        self._accounts = UsageAccounts(usage if usage is not None else UsageRecorder(None))
        self._packer = Packer(settings)
        self._results = ResultIO(store)
        uploads = UploadCache(settings.reupload_after_seconds)
        self._submitter = Submitter(backend, store, settings, keys, uploads, clock)
        self._stopper = JobStopper(backend, clock)
        self._resolver = Resolver(
            backend=backend, store=store, results=self._results, settings=settings, keys=keys, ledger=self._ledger,
            accounts=self._accounts, uploads=uploads, clock=clock,
        )  # fmt: skip
        self._leftovers = LeftoverResults(store, keys, self._results, self._ledger)
        self._reconciler = Reconciler(
            backend=backend, store=store, results=self._results, settings=settings, ledger=self._ledger,
            accounts=self._accounts, resolver=self._resolver, stopper=self._stopper, packer=self._packer, clock=clock,
            leftovers=self._leftovers,
        )  # fmt: skip
        self._stock = StockTaker(
            backend=backend, store=store, settings=settings, keys=keys, ledger=self._ledger, stopper=self._stopper,
            leftovers=self._leftovers, clock=clock,
        )  # fmt: skip
        self._intake_open = True
        self._submitting = 0  # submissions in flight (a thread may be inside SubmitJob)
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def backend(self) -> JobBackend:
        return self._backend

    @property
    def store(self) -> ObjectStore:
        return self._store

    @property
    def usage(self) -> UsageRecorder:
        return self._accounts.recorder

    async def close_usage(self, timeout_seconds: float = 10.0) -> str:
        """At exit: make the describes still owed to the usage log (bounded), close the log and return (and log)
        the one-line summary."""
        deadline = self._clock() + timeout_seconds
        while self._accounts.owed and self._clock() < deadline:
            try:
                await asyncio.wait_for(
                    self._reconciler.describe_round(self._clock()), timeout=max(0.0, deadline - self._clock())
                )
            except asyncio.TimeoutError:
                break
            if self._accounts.owed:  # jobs whose result arrived before Batch marked them final
                await asyncio.sleep(min(0.5, max(0.0, deadline - self._clock())))
        left = self._accounts.settle_all()
        if left:
            logger.warning("usage: %d job(s) recorded without their describe (not described in time)", left)
        line = self.usage.summary.one_line()
        logger.info(line)
        self.usage.close()
        return line

    # --- called by the adapter ----------------------------------------------------------------------------------

    def submit(self, work: TaskWork) -> asyncio.Future[TaskOutcome]:
        future: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
        task = self._ledger.tasks[work.task_id] = TaskRecord(work=work, future=future)
        self._route(task)
        return future

    def _route(self, task: TaskRecord, *, second_look: bool = False) -> None:
        """A task goes to its live job, its stored result, the second look (held) or a new submission."""
        work = task.work
        if self._ledger.attach(task):
            logger.info("task %s: attached to its live job %s%s", work.task_id, task.job_id,
                        " (found by the second look)" if second_look else "")  # fmt: skip
            self._reconciler.wake.set()
        elif self._ledger.stored.pop(work.task_id, None) is not None:
            asyncio.get_running_loop().create_task(self._deliver_stored(work))
        elif second_look or not self._stock.hold(work.task_id):  # held: a dead predecessor's SubmitJob may land
            self._packer.add(work.pack_key(), work.task_id, self._clock())

    async def cancel(self, task_id: str) -> bool:
        """Stop a task wherever it is. Returns False when the engine does not know it (already finished)."""
        task = self._ledger.tasks.pop(task_id, None)
        if task is None:
            return False
        self._packer.remove(task_id)
        if task.job_id is not None:
            await self._stopper.stop(task_id, task.job_id, task.state)
        if not task.future.done():
            task.future.cancel()
        self.stats["cancelled"] += 1
        return True

    async def run(self) -> None:
        try:
            await asyncio.gather(self._pack_loop(), self._reconciler.run(), self._second_look())
        finally:
            await asyncio.to_thread(self._results.close)

    # --- re-attachment ------------------------------------------------------------------------------------------

    async def take_stock(self) -> Stock:
        """Find this adapter's live jobs and stored results (before the adapter takes any task). Their tasks wait
        ``reattach_grace_seconds`` for Scaler to send them again."""
        stock = await self._stock.first()
        if stock.live_jobs:
            self._reconciler.wake.set()
        return stock

    async def _second_look(self) -> None:
        for task_id in await self._stock.second():
            task = self._ledger.tasks.get(task_id)
            if task is not None:  # not cancelled meanwhile
                self._route(task, second_look=True)
        self._reconciler.wake.set()

    def adopt(self, jobs: Sequence[FoundJob]) -> None:
        now = self._clock()
        self._ledger.adopt(jobs, now, now + self._settings.reattach_grace_seconds)
        if jobs:
            self._reconciler.wake.set()

    @property
    def settings(self) -> EngineSettings:
        return self._settings

    def detach_all(self) -> None:
        """The scheduler went away: keep every submitted job, waiting for its task to be sent again (grace period);
        forget tasks not yet submitted (nobody waits for their results any more)."""
        for task in self._ledger.detach_all(self._clock() + self._settings.reattach_grace_seconds):
            task.future.cancel()
        self._packer.clear()

    def cut_grace(self, grace_seconds: float) -> int:
        """Scaler restarted (its scheduler or object storage server): the kept jobs' tasks will never be sent again,
        so they wait ``grace_seconds`` at most, then their jobs are stopped with :data:`SCALER_RESTARTED_REASON`.
        Returns the tasks it cut short."""
        cut = self._ledger.cut_grace(self._clock() + grace_seconds)
        self._reconciler.wake.set()
        return cut

    def kept(self) -> tuple[int, int, float]:
        """Jobs kept for a re-send, their tasks, and the seconds until the last of their grace ends (0: none)."""
        jobs = {self._ledger.awaiting_job[task_id][0] for task_id in self._ledger.awaiting}
        last = max(self._ledger.awaiting.values(), default=self._clock())
        return len(jobs), len(self._ledger.awaiting), max(0.0, last - self._clock())

    async def _deliver_stored(self, work: TaskWork) -> None:
        status = JobStatus(job_id="(stored result)", state=JobState.SUCCEEDED)
        try:
            read = await asyncio.to_thread(self._resolver.read_result, work.task_id, status)
        except StoreError as exc:
            logger.warning("task %s: reading its stored result failed, running it: %s", work.task_id, exc)
            read = None
        except ResultRejectedError as exc:  # not signed with our key: never taken, the task runs instead
            logger.warning("task %s: its stored result was refused, running it: %s", work.task_id, exc)
            read = None
        if read is None:  # gone meanwhile (or refused): run the task after all
            self._packer.add(work.pack_key(), work.task_id, self._clock())
            return
        outcome, _ = read
        logger.info("task %s: delivered its stored result, no job submitted", work.task_id)
        self.stats["stored-delivered"] += 1
        self._ledger.finish(work.task_id, outcome)

    # --- shutdown -----------------------------------------------------------------------------------------------

    def close_intake(self) -> None:
        """Submit nothing new; tasks not yet submitted stay unsubmitted."""
        self._intake_open = False
        self._packer.wake.set()

    async def shutdown(self, *, stop_jobs: bool, timeout_seconds: float) -> ShutdownReport:
        """Close intake, let submissions in flight settle, then stop every live job, arrays first, at the backend's
        stop budget, until ``timeout_seconds`` have passed; or, without ``stop_jobs``, leave them running for a later
        re-attach. Jobs not stopped by then are handed over to the next adapter with this id, and logged so."""
        self.close_intake()
        deadline = self._clock() + timeout_seconds
        try:
            await asyncio.wait_for(self._settled.wait(), timeout=timeout_seconds)
        except asyncio.TimeoutError:
            logger.error("shutdown: %d submission(s) still in flight after %.0fs", self._submitting, timeout_seconds)
        self._reconciler.delete_read_results(math.inf)
        jobs = {job_id: job.state for job_id, job in self._ledger.jobs.items()}
        report = ShutdownReport(kept=[] if stop_jobs else sorted(jobs))
        if not stop_jobs:
            logger.info(
                "shutdown: left %d job(s) running for a later re-attach: %s", len(jobs), ", ".join(sorted(jobs))
            )
            return report
        arrays = {job_id for job_id, job in self._ledger.jobs.items() if job.is_array}
        await self._stopper.stop_at_shutdown(jobs, arrays, deadline, timeout_seconds, self._settings.adapter_id, report)
        return report

    # --- packing and submission ---------------------------------------------------------------------------------

    async def _pack_loop(self) -> None:
        while self._intake_open:
            now = self._clock()
            for key in self._packer.due_keys(now):
                for group in self._packer.take(key, now, self._ledger.tasks.__contains__):
                    if not self._intake_open:
                        break
                    await self._submit_group(group)
            next_due = self._packer.next_due()
            if next_due is not None:
                try:
                    await asyncio.wait_for(self._packer.wake.wait(), timeout=max(0.0, next_due - self._clock()))
                except asyncio.TimeoutError:
                    pass
            else:
                await self._packer.wake.wait()
            self._packer.wake.clear()

    async def _submit_group(self, task_ids: list[str]) -> None:
        tasks = [self._ledger.tasks[task_id] for task_id in task_ids]
        works = [task.work for task in tasks]
        maybe_submitted = any(task.maybe_submitted for task in tasks)
        started = self._clock()
        for task in tasks:
            if task.submit_deadline is None:
                task.submit_deadline = started + self._settings.submit_deadline_seconds
        # One nonce per group, kept across retries: a job an ambiguous failure did create carries the same one.
        nonce = tasks[0].nonce or new_nonce()
        self._submitting += 1
        self._settled.clear()
        try:
            for task in tasks:
                task.nonce = nonce
            decision = await self._submitter.submit(works, nonce, maybe_submitted)
        finally:
            self._submitting -= 1
            if self._submitting == 0:
                self._settled.set()
        if isinstance(decision, Transient):
            self._requeue_or_fail(task_ids, decision)
        elif isinstance(decision, Refused):
            for task_id in task_ids:
                self._ledger.finish(task_id, TaskOutcome(False, pickle.dumps(decision.error)))
        else:
            await self._place_submitted(task_ids, works, decision, started)

    async def _place_submitted(
        self, task_ids: list[str], works: list[TaskWork], submitted: Submitted, started: float
    ) -> None:
        self.stats[f"transport:{submitted.transport}"] += len(works)
        self.stats["jobs:array" if len(works) > 1 else "jobs:single"] += 1
        now = self._clock()
        cancelled = self._ledger.record_submission(submitted.job_id, task_ids, works[0], submitted.uploads, now)
        for task_id, target in cancelled:  # cancelled while the job was being submitted: stop its job (or child)
            await self._stopper.stop(task_id, target, None)
        logger.info(
            "submitted %s job %s for %d task(s), payload %s, in %.3fs",
            self._backend.name, submitted.job_id, len(works), submitted.transport, now - started,
        )  # fmt: skip
        self._reconciler.wake.set()

    def _requeue_or_fail(self, task_ids: list[str], transient: Transient) -> None:
        now = self._clock()
        live = {task_id: self._ledger.tasks[task_id] for task_id in task_ids if task_id in self._ledger.tasks}
        requeue = self._submitter.transient_decision(live, transient.error, now, self.stats["submit:requeued"] + 1)
        for task_id, error in requeue.failed.items():
            self._ledger.finish(task_id, TaskOutcome(False, pickle.dumps(error)))
        if not requeue.retry:
            logger.error("submitting %d task(s) failed for good: %s", len(requeue.failed), transient.error)
            return
        self.stats["submit:requeued"] += 1
        key = self._ledger.tasks[requeue.retry[0]].work.pack_key()
        self._packer.requeue(key, requeue.retry, now, requeue.delay)
        logger.warning("submitting %d task(s) met a transient error; retrying in %.1fs: %s", len(requeue.retry),
                       requeue.delay, transient.error)  # fmt: skip
