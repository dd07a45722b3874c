"""Taking stock: this adapter's jobs and stored results, from the backend and the store alone, at start and once
more after an id was taken over from a dead adapter (the second look).

A dead predecessor's SubmitJob may still land after the first look (a slow call, or ListJobs' lag), so after such a
takeover tasks that find neither a job nor a stored result are held until the second look, when every such
submission has landed (``EngineSettings.second_look_after_seconds``). Found jobs go to the ledger; the facade routes
the released tasks (to their job, their stored result, or a new submission).
"""

from __future__ import annotations

import asyncio
import logging
import math

from scaler_aws_batch.backends.base import JobBackend
from scaler_aws_batch.contracts import job_name_prefix
from scaler_aws_batch.engine.ledger import Ledger
from scaler_aws_batch.engine.leftovers import LeftoverResults
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.stopping import JobStopper
from scaler_aws_batch.engine.work import Clock
from scaler_aws_batch.errors import BackendError, StoreError
from scaler_aws_batch.reattach import Stock, take_stock
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore

logger = logging.getLogger(__name__)


class StockTaker:
    def __init__(
        self, *, backend: JobBackend, store: ObjectStore, settings: EngineSettings, keys: KeyRing, ledger: Ledger,
        stopper: JobStopper, leftovers: LeftoverResults, clock: Clock,
    ) -> None:  # fmt: skip
        self._backend, self._store, self._settings, self._keys = backend, store, settings, keys
        self._ledger, self._stopper, self._leftovers, self._clock = ledger, stopper, leftovers, clock
        self._second_look_at: float | None = None
        self._held: list[str] = []

    def hold(self, task_id: str) -> bool:
        """Before the second look: keep a task that found no job and no stored result (True), its job may appear."""
        if self._second_look_at is None:
            return False
        self._held.append(task_id)
        return True

    async def first(self) -> Stock:
        """Find this adapter's live jobs (adopted into the ledger: their tasks wait ``reattach_grace_seconds`` to be
        sent again) and stored results, before the adapter takes any task."""
        stock = await self._look("taking stock of adapter %s's jobs failed; continuing without re-attach: %s")
        await self._adopt(stock)
        # Results in the store are delivered when their task comes again. Unclaimed after the grace, only those a
        # job of this adapter id wrote are deleted: the prefix may be shared with other adapters whose results these
        # are (the bucket's lifecycle rule expires the rest).
        self._ledger.stored.update(dict.fromkeys(stock.stored_results, math.inf))
        grace_end = self._clock() + self._settings.reattach_grace_seconds
        self._leftovers.note(stock.stored_results, stock.own_job_ids, grace_end)
        logger.info("took stock for adapter id %s: %d live job(s) with %d task(s), %d stored result(s)",
                    self._settings.adapter_id, len(stock.live_jobs), sum(len(job.task_ids) for job in stock.live_jobs),
                    len(stock.stored_results))  # fmt: skip
        if self._settings.second_look_after_seconds > 0:
            self._second_look_at = self._clock() + self._settings.second_look_after_seconds
            logger.info("adapter id %s was taken over from a dead adapter whose last SubmitJob may still land: tasks "
                        "sent again that find no job wait up to %.0fs for a second look at its jobs",
                        self._settings.adapter_id, self._settings.second_look_after_seconds)  # fmt: skip
        return stock

    async def second(self) -> list[str]:
        """When a predecessor's SubmitJob can no longer land: look again, adopt the jobs found, and return the held
        task ids for the facade to route. Returns at once when no second look is due.

        Scaler sends a dead worker's tasks again only after its worker timeout (60 s by default), close to the end
        of this window: the hold rarely delays a task in practice."""
        if self._second_look_at is None:
            return []
        await asyncio.sleep(max(0.0, self._second_look_at - self._clock()))
        known = set(self._ledger.jobs)
        stock = await self._look("second look for adapter %s's jobs failed; submitting the held tasks: %s")
        found = [job for job in stock.live_jobs if job.job_id not in known]
        unreadable = tuple(job for job in stock.unreadable if job.job_id not in known)
        await self._adopt(Stock(live_jobs=tuple(found), stored_results=frozenset(), unreadable=unreadable))
        held, self._held, self._second_look_at = self._held, [], None
        stored = stock.stored_results & set(held)
        self._ledger.stored.update(dict.fromkeys(stored, math.inf))
        logger.info("second look for adapter id %s: %d more live job(s), %d stored result(s) of held tasks; "
                    "releasing %d held task(s)", self._settings.adapter_id, len(found), len(stored),
                    len(held))  # fmt: skip
        return held

    async def _adopt(self, stock: Stock) -> None:
        """Track the found jobs; stop those of this adapter whose task table cannot be read."""
        now = self._clock()
        self._ledger.adopt(stock.live_jobs, now, now + self._settings.reattach_grace_seconds)
        for listed in stock.unreadable:  # ours by name, but nobody can ever claim it
            await self._stopper.stop("(unknown)", listed.job_id, listed.state, "Its task table cannot be read")

    async def _look(self, failure: str) -> Stock:
        try:
            return await asyncio.to_thread(
                take_stock, self._backend, self._store, job_name_prefix(self._settings.adapter_id),
                self._settings.queues, self._keys,
            )  # fmt: skip
        except (BackendError, StoreError) as exc:
            # Serving beats refusing: tasks sent again will run again, and their old jobs are not stopped.
            logger.error(failure, self._settings.adapter_id, exc)
            return Stock(live_jobs=(), stored_results=frozenset())
