"""The ledger: which task is in which job, which tasks wait to be sent again, which results wait to be claimed.

No I/O and no clock of its own: every method is given the time it needs, and what must be done outside (stop these
jobs, delete these results) comes back as a return value.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
from collections.abc import Sequence

from scaler_aws_batch.backends.base import JobState
from scaler_aws_batch.engine.work import TaskOutcome, TaskWork
from scaler_aws_batch.reattach import FoundJob
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.usage import JobUsage, Outcome


@dataclasses.dataclass
class TaskRecord:
    work: TaskWork
    future: asyncio.Future[TaskOutcome]
    job_id: str | None = None  # the single job, or the array child ``parent:index``
    state: JobState | None = None
    submit_deadline: float | None = None  # set at the first submission attempt
    maybe_submitted: bool = False  # an earlier attempt failed in a way that may have created the job
    nonce: str = ""  # the nonce of the payload that carries this task; its result must echo it ('' : any)
    spot_reclaims: int = 0  # over every job this task ran in
    uploads: tuple[str, ...] = ()  # store keys that payload refers to


@dataclasses.dataclass
class JobRecord:
    job_id: str
    tasks: dict[int | None, str]  # array index (None for a single job) -> task id
    checked_at: float  # when describe last answered (with or without this job)
    missing_seconds: float = 0.0  # answered-without time since the job was last reported
    state: JobState | None = None
    queue: str | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    runnable_since: float | None = None  # when the job was first seen waiting for capacity
    runnable_explained: bool = False
    ok_resolved: int = 0  # array children resolved with a result
    failed_resolved: int = 0  # array children resolved as failures, or cancelled (Batch counts those FAILED)
    is_array: bool = False
    refused: set[int | None] = dataclasses.field(default_factory=set)  # listed results refused: the describe decides
    # For the usage log (see UsageAccounts.owe):
    parent_described: bool = False  # an array parent whose queue and resources the recorder has
    described_final: bool = False  # a single job described in a final state; its figures in final_usage
    final_usage: JobUsage | None = None
    usage_tries: int = 0  # answered describes while it was owed one for usage
    usage_pending: list[tuple[str, Outcome]] = dataclasses.field(default_factory=list)  # (task id, outcome)

    def target(self, index: int | None) -> str:
        """The id to describe or cancel: the job itself, or its array child."""
        return self.job_id if index is None else f"{self.job_id}:{index}"


#: A task resolved from its listed result before its job (or array child) was described: (job, array index).
Tentative = tuple[JobRecord, int | None]


#: Why a kept job is stopped once the Scaler process that held its task ended (the backend's stop reason, e.g. Batch's
#: statusReason): a restarted scheduler or object storage server keeps nothing of the old tasks.
SCALER_RESTARTED_REASON = (
    "Scaler restarted (its scheduler or object storage server): this task will never be sent again"
)


@dataclasses.dataclass(frozen=True)
class Expiry:
    """What the grace period ended: job targets to stop, and task ids whose results to delete."""

    stop: list[tuple[str, JobState | None]]
    delete: set[str]
    stopped_tasks: int
    #: Targets in ``stop`` whose tasks were lost in a Scaler restart (their grace was cut short).
    after_restart: frozenset[str] = frozenset()


class Ledger:
    def __init__(self) -> None:
        self.tasks: dict[str, TaskRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.awaiting: dict[str, float] = {}  # task id in a live job, not (yet) sent again -> grace deadline
        self.awaiting_job: dict[str, tuple[str, int | None]] = {}  # ... -> (job id, array index)
        #: Task id -> (job id, array index) of every task in a tracked job's ``tasks``: a listed result finds its
        #: task without a walk over every task in flight (10,000 of them, every reconcile round).
        self.homes: dict[str, tuple[str, int | None]] = {}
        self.stored: dict[str, float] = {}  # task id with a result in the store, unclaimed -> grace deadline
        #: Awaiting task ids lost in a Scaler restart: they will never be sent again (their grace was cut).
        self.orphaned_by_restart: set[str] = set()
        self.stats: collections.Counter[str] = collections.Counter()

    # --- tasks --------------------------------------------------------------------------------------------------

    def finish(self, task_id: str, outcome: TaskOutcome) -> None:
        task = self.tasks.pop(task_id, None)
        if task is None or task.future.done():
            return
        self.stats["succeeded" if outcome.success else "failed"] += 1
        task.future.set_result(outcome)

    def attach(self, task: TaskRecord) -> bool:
        """A task sent again joins its live job, if it still has one."""
        task_id = task.work.task_id
        if self.awaiting.pop(task_id, None) is None:
            return False
        job_id, index = self.awaiting_job.pop(task_id)
        job = self.jobs.get(job_id)
        if job is None or job.tasks.get(index) != task_id:
            return False
        task.job_id = job.target(index)
        task.state = job.state
        self.stats["attached"] += 1
        return True

    def keep_stored(self, task_id: str) -> None:
        """A task waiting to be sent again finished: its result stays stored for the re-send, within the grace."""
        self.stored[task_id] = self.awaiting.pop(task_id)
        self.awaiting_job.pop(task_id, None)

    def forget_awaiting(self, task_id: str) -> None:
        self.awaiting.pop(task_id, None)
        self.awaiting_job.pop(task_id, None)

    # --- jobs ---------------------------------------------------------------------------------------------------

    def place(self, job: JobRecord, index: int | None, task_id: str) -> None:
        job.tasks[index] = task_id
        self.homes[task_id] = (job.job_id, index)

    def unplace(self, job: JobRecord, index: int | None) -> None:
        task_id = job.tasks.pop(index)
        if self.homes.get(task_id) == (job.job_id, index):
            del self.homes[task_id]

    def drop_job(self, job: JobRecord) -> None:
        """Stop tracking ``job`` whatever tasks it still names (the caller resolves them)."""
        self.jobs.pop(job.job_id, None)
        for index, task_id in job.tasks.items():
            if self.homes.get(task_id) == (job.job_id, index):
                del self.homes[task_id]

    def home_of(self, task_id: str) -> tuple[JobRecord, int | None] | None:
        """The tracked job (and index) that still names ``task_id``, if one does and its listed result may count."""
        home = self.homes.get(task_id)
        job = self.jobs.get(home[0]) if home is not None else None
        if home is None or job is None or job.tasks.get(index := home[1]) != task_id or index in job.refused:
            return None
        return job, index

    def has_listable(self) -> bool:
        """Some tracked task may be resolved from a listed result."""
        return any(index not in job.refused for job in self.jobs.values() for index in job.tasks)

    def record_submission(
        self, job_id: str, task_ids: Sequence[str], first: TaskWork, uploads: tuple[str, ...], now: float
    ) -> list[tuple[str, str]]:
        """A job was submitted for ``task_ids``: place its tasks. Returns (task id, job target) of tasks cancelled
        while the job was being submitted: their job (or child) must be stopped."""
        job = JobRecord(job_id=job_id, tasks={}, checked_at=now, queue=first.queue, resources=first.resources,
                        is_array=len(task_ids) > 1)  # fmt: skip
        cancelled: list[tuple[str, str]] = []
        for index, task_id in enumerate(task_ids):
            position = None if len(task_ids) == 1 else index
            task = self.tasks.get(task_id)
            if task is None:
                cancelled.append((task_id, job.target(position)))
                job.failed_resolved += 1
                continue
            task.job_id, task.uploads = job.target(position), uploads
            self.place(job, position, task_id)
        if job.tasks:
            self.jobs[job_id] = job
        return cancelled

    def put_back(self, task_id: str, job: JobRecord, index: int | None) -> None:
        """A listed result was refused or is gone: the task waits in its job again, for the job's final state."""
        self.place(job, index, task_id)
        job.ok_resolved -= 1
        job.refused.add(index)
        self.jobs.setdefault(job.job_id, job)

    # --- re-attachment ------------------------------------------------------------------------------------------

    def adopt(self, jobs: Sequence[FoundJob], now: float, deadline: float) -> None:
        """Jobs found at start: their tasks wait until ``deadline`` to be sent again."""
        for found in jobs:
            job = self.jobs.get(found.job_id)
            is_array = found.array_size is not None
            if job is None:
                job = self.jobs[found.job_id] = JobRecord(
                    found.job_id, {}, checked_at=now, state=found.state, is_array=is_array
                )
            for index, task_id in enumerate(found.task_ids):
                self.place(job, index if is_array else None, task_id)
                task = self.tasks.get(task_id)
                if task is None or task.job_id is None:  # not sent yet, or sent and held unsubmitted: may attach
                    self.awaiting[task_id] = deadline
                    self.awaiting_job[task_id] = (found.job_id, index if is_array else None)

    def detach_all(self, deadline: float) -> list[TaskRecord]:
        """Forget every task; those in a job wait until ``deadline`` to be sent again. Returns the forgotten tasks."""
        placed = {task_id: (job.job_id, index) for job in self.jobs.values() for index, task_id in job.tasks.items()}
        forgotten = list(self.tasks.values())
        for task_id in list(self.tasks):
            del self.tasks[task_id]
            if task_id in placed:
                self.awaiting[task_id] = deadline
                self.awaiting_job[task_id] = placed[task_id]
        return forgotten

    def next_deadline(self) -> float:
        """When the next grace of a task waiting to be sent again ends (inf: none waits)."""
        return min(self.awaiting.values(), default=math.inf)

    def cut_grace(self, deadline: float) -> int:
        """The Scaler process that held the awaiting tasks ended: none waits past ``deadline`` any more, nor does an
        unclaimed result of the grace. Returns the tasks whose grace was cut."""
        cut = 0
        for task_id, current in self.awaiting.items():
            self.orphaned_by_restart.add(task_id)
            if current > deadline:
                self.awaiting[task_id] = deadline
                cut += 1
        for task_id, current in self.stored.items():
            if math.isfinite(current) and current > deadline:  # inf: found at start, never deleted unclaimed
                self.stored[task_id] = deadline
        return cut

    def expire(self, now: float, delete_results: bool) -> Expiry:
        """End the grace period of tasks not sent again by ``now`` and of unclaimed stored results."""
        unclaimed = {task_id for task_id, deadline in self.stored.items() if deadline <= now}
        for task_id in unclaimed:
            del self.stored[task_id]
        expired = {task_id for task_id, deadline in self.awaiting.items() if deadline <= now}
        delete = set(unclaimed) if delete_results else set()
        stop: list[tuple[str, JobState | None]] = []
        after_restart: set[str] = set()
        stopped_tasks = 0
        if expired:
            for job in list(self.jobs.values()):
                mine = {index: task_id for index, task_id in job.tasks.items() if task_id in expired}
                if not mine:
                    continue
                whole = len(mine) == len(job.tasks)
                targets = [job.job_id] if whole or None in mine else [job.target(index) for index in mine]
                stop.extend((target, job.state) for target in targets)
                if any(task_id in self.orphaned_by_restart for task_id in mine.values()):
                    after_restart.update(targets)
                for index in mine:
                    self.unplace(job, index)
                if not job.tasks:
                    del self.jobs[job.job_id]
                stopped_tasks += len(mine)
            for task_id in expired:
                del self.awaiting[task_id]
                self.awaiting_job.pop(task_id, None)
            if delete_results:
                delete |= expired
        self.orphaned_by_restart.intersection_update(self.awaiting)  # attached, finished or expired meanwhile
        return Expiry(stop=stop, delete=delete, stopped_tasks=stopped_tasks, after_restart=frozenset(after_restart))
