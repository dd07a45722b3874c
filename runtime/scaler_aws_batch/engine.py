"""The shared job engine: everything a backend does not do.

- **Packing.** Tasks that share serializer, resources, queue and timeout gather until none has arrived for
  ``array_window_seconds`` (or the first has waited ``array_max_wait_seconds``, which doubles up to
  ``array_max_wait_cap_seconds`` while a stream of tasks lasts, or 10,000 are there) and become one array job
  (2..10,000 children) with one payload; a lone task becomes a single job.
- **Payload planning.** Inline while the rendered container overrides stay inside AWS's 8,192-character budget
  (measured by the backend, not guessed), gzip when that makes it fit, otherwise large blobs go to the store as
  content-addressed objects and, if still needed, the payload itself goes to the store and only a reference travels.
  A stored array payload is indexed (:mod:`scaler_aws_batch.indexed_payload`): each child reads only its own task.
- **One reconcile loop** for all jobs. Each round lists the results prefix once (S3 calls, no Batch call) and
  resolves every task whose result is there, single job or array child. Describe calls (in chunks of at most
  ``backend.max_describe_batch``) come less often, backing off to ``describe_interval_max_seconds``: they report
  what results cannot (jobs failed without a result, RUNNABLE jobs, the usage log). Array parents are read through
  their status summary; children are described only when some failed. A job that DescribeJobs *answered without*
  for ``vanish_bound_seconds`` fails its tasks and is stopped (failed describe calls pause that clock: an outage is
  not a vanish).
- **Outages.** A submission that meets throttling, server errors or expired credentials is requeued with backoff
  until ``submit_deadline_seconds``; only then does it fail, with the hint of its error class.
- **Re-attachment** (:mod:`scaler_aws_batch.reattach`). Job names start with the adapter id, so a restarted adapter
  finds its live jobs and their task tables in the backend alone. A task sent again attaches to its live job, or
  gets its stored result with no job at all; jobs whose tasks are not sent again within the grace period stop.
- **Shutdown.** :meth:`JobEngine.shutdown` stops intake, lets submissions in flight settle, then stops every live
  job within a bound (or leaves them running for a later re-attach).
- **Outcomes.** A finished job's result object is read from the store, its signature and its nonce (which binds it
  to this submission) checked, and handed over as bytes, never unpickled; reads run
  concurrently in the background and results are deleted in batches (:mod:`scaler_aws_batch.results`). A FAILED job
  without a result becomes a clear error (timeout, Spot retries exhausted, overrides too long, out of memory,
  non-zero exit) carrying the job's last log lines.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import pickle
import random
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence

from scaler_aws_batch.backends.base import (
    BackendError,
    BackendUnavailableError,
    JobBackend,
    JobSpec,
    JobState,
    JobStatus,
    Resources,
)
from scaler_aws_batch.contracts import (
    SPOT_INTERRUPTION_PREFIXES,
    SPOT_RECLAIMS_BEFORE_ON_DEMAND,
    JobTag,
    RunnerExit,
    StatusReason,
    job_name_prefix,
)
from scaler_aws_batch.errors import (
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    JobVanishedError,
    ObjectMissingError,
    OverridesTooLongError,
    PayloadRejectedError,
    ResultFromAnotherSubmissionError,
    ResultMissingError,
    ResultRejectedError,
    SpotRetriesExhaustedError,
    StoreError,
    StoreUnavailableError,
    SubmitError,
)
from scaler_aws_batch.indexed_payload import encode_indexed_payload
from scaler_aws_batch.limits import MAX_ARRAY_SIZE, MAX_CONTAINER_OVERRIDES_CHARS, OVERRIDES_SAFETY_MARGIN_CHARS
from scaler_aws_batch.reattach import FoundJob, ShutdownReport, Stock, take_stock
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore
from scaler_aws_batch.tags import check_user_tags
from scaler_aws_batch.usage import JobUsage, Outcome, UsageRecorder
from scaler_aws_batch.wire import (
    PAYLOADS_PREFIX,
    RESULTS_PREFIX,
    PayloadBuilder,
    TaskBlobs,
    decode_result,
    indexed_parameter,
    inline_parameter,
    maybe_gzip,
    ref_parameter,
    result_key,
    sha256_hex,
)

logger = logging.getLogger(__name__)

_NO_STORE = 1 << 62  # a store threshold no blob reaches: everything inline
#: Answered describes an untracked job gets to report its final usage before it is recorded without it.
_USAGE_TRIES = 5


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    adapter_id: str
    client_python: str
    cloudpickle_version: str
    job_timeout_seconds: int = 3600
    array_window_seconds: float = 0.05
    #: A steady stream of tasks keeps extending the window; the first task waits at most this long. While the
    #: stream lasts (every group is cut at this bound) the bound doubles, up to ``array_max_wait_cap_seconds``: a
    #: large map becomes a few large arrays (SubmitJob calls stay nearly flat) instead of one array per 2 s.
    array_max_wait_seconds: float = 2.0
    array_max_wait_cap_seconds: float = 10.0
    max_array_size: int = MAX_ARRAY_SIZE
    poll_interval_min_seconds: float = 0.05
    poll_interval_max_seconds: float = 2.0
    #: Describe calls back off from poll_interval_min_seconds to this while results arrive through store listings.
    describe_interval_max_seconds: float = 10.0
    vanish_bound_seconds: float = 60.0
    store_threshold_bytes: int = 2048
    overrides_budget_chars: int = MAX_CONTAINER_OVERRIDES_CHARS - OVERRIDES_SAFETY_MARGIN_CHARS
    log_tail_lines: int = 20
    delete_results: bool = True
    #: A result read is deleted this long after it was handed over, not at once: an adapter killed in between leaves
    #: it in the store, and the next adapter delivers it when Scaler sends the task again instead of running it.
    result_delete_delay_seconds: float = 1.0
    #: How long a job found at start (or kept over a scheduler restart) waits for Scaler to send its task again
    #: before it is stopped. Longer than the scheduler's worker timeout (Scaler: 60 s), which delays the re-send.
    reattach_grace_seconds: float = 180.0
    #: How long a submission keeps being retried through throttling, server errors and expired credentials.
    submit_deadline_seconds: float = 600.0
    #: Queues searched for this adapter's jobs at start (None: the backend's default queue).
    queues: tuple[str | None, ...] = (None,)
    #: Re-upload content-addressed objects older than this; keep it well under the bucket's expiry (>= 1 day).
    reupload_after_seconds: float = 6 * 3600
    #: Where a task goes after ``spot_reclaims_before_on_demand`` Spot reclaims (None: it fails instead).
    on_demand_queue: str | None = None
    spot_reclaims_before_on_demand: int = SPOT_RECLAIMS_BEFORE_ON_DEMAND
    #: A job waiting in RUNNABLE longer than this is logged once, with the queue's state and a diagnosis.
    runnable_warn_seconds: float = 300.0
    #: User tags on every job (``cdk.json`` ``job_tags`` and ``--tag``), checked by :mod:`scaler_aws_batch.tags`.
    user_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.max_array_size <= MAX_ARRAY_SIZE:
            raise ValueError(f"max_array_size must be within 1..{MAX_ARRAY_SIZE}, got {self.max_array_size}")
        if self.array_max_wait_cap_seconds < self.array_max_wait_seconds:
            raise ValueError("the array max wait cap must be at least the array max wait")
        if self.poll_interval_min_seconds <= 0 or self.poll_interval_max_seconds < self.poll_interval_min_seconds:
            raise ValueError("poll intervals must be positive, with min <= max")
        if self.describe_interval_max_seconds < self.poll_interval_min_seconds:
            raise ValueError("the describe interval must be at least the shortest poll interval")
        if self.job_timeout_seconds <= 0:
            raise ValueError(f"job timeout must be positive, got {self.job_timeout_seconds}")
        if self.vanish_bound_seconds <= 0 or self.reattach_grace_seconds < 0 or self.submit_deadline_seconds < 0:
            raise ValueError("the vanish bound must be positive; the re-attach grace and submit deadline not negative")
        if self.spot_reclaims_before_on_demand < 1:
            raise ValueError(
                f"--spot-reclaims-before-on-demand must be at least 1, got {self.spot_reclaims_before_on_demand}"
            )
        if self.runnable_warn_seconds <= 0:
            raise ValueError(f"--runnable-warn-after must be positive, got {self.runnable_warn_seconds}")
        if not self.adapter_id or not self.adapter_id.replace("-", "").isalnum() or len(self.adapter_id) > 40:
            raise ValueError(f"the adapter id must be 1-40 letters, digits or '-', got {self.adapter_id!r}")
        check_user_tags(self.user_tags, source="job tags")


@dataclasses.dataclass(frozen=True)
class TaskWork:
    """One task as the adapter hands it over: the client's bytes plus how to run it."""

    blobs: TaskBlobs
    resources: Resources = dataclasses.field(default_factory=Resources)
    queue: str | None = None
    timeout_seconds: int | None = None

    @property
    def task_id(self) -> str:
        return self.blobs.task_id

    def pack_key(self) -> tuple[object, ...]:
        return (sha256_hex(self.blobs.serializer), self.resources, self.queue, self.timeout_seconds)


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """A finished task: bytes for Scaler's object storage. ``success`` bytes are the client serializer's output;
    failure bytes are a pickled exception (Scaler's failure format)."""

    success: bool
    body: bytes


@dataclasses.dataclass(frozen=True)
class PayloadPlan:
    parameter: str
    transport: str  # inline | inline-gzip | inline+objects | ref | indexed
    uploads: dict[str, bytes]
    nonce: str


def new_nonce() -> str:
    """A random per-submission value; the job echoes it in each signed result, which binds the result to it."""
    return secrets.token_hex(12)


def plan_payload(
    tasks: Sequence[TaskBlobs],
    *,
    spec: JobSpec,
    backend: JobBackend,
    store_url: str,
    settings: EngineSettings,
    keys: KeyRing,
    nonce: str,
) -> PayloadPlan:
    """Choose how ``tasks`` travel to the runner; see the module docstring for the order of preference."""

    def fits(parameter: str) -> bool:
        return backend.overrides_length(dataclasses.replace(spec, payload=parameter)) <= settings.overrides_budget_chars

    attempts = [(_NO_STORE, "inline")]
    threshold = settings.store_threshold_bytes
    if any(len(blob) >= threshold for task in tasks for blob in (task.serializer, task.function, *task.arguments)):
        attempts.append((threshold, "inline+objects"))  # without a large blob it would build the same envelope again
    for threshold, label in attempts:
        builder = PayloadBuilder(
            python=settings.client_python,
            cloudpickle_version=settings.cloudpickle_version,
            result_store=store_url,
            store_threshold=threshold,
            nonce=nonce,
            keys=keys,
        )
        for task in tasks:
            builder.add_task(task)
        envelope = builder.encode()
        if fits(parameter := inline_parameter(envelope)):
            return PayloadPlan(parameter, label, builder.stored_blobs, nonce)
        compressed = maybe_gzip(envelope)
        if compressed is not envelope and fits(parameter := inline_parameter(compressed)):
            return PayloadPlan(parameter, "inline-gzip" if label == "inline" else label, builder.stored_blobs, nonce)
    if len(tasks) > 1:  # an array: each child reads only its own task (format 3, ranged reads)
        indexed, stored_blobs = encode_indexed_payload(
            tasks, python=settings.client_python, cloudpickle_version=settings.cloudpickle_version,
            result_store=store_url, store_threshold=settings.store_threshold_bytes, nonce=nonce, keys=keys,
        )  # fmt: skip
        key = f"{PAYLOADS_PREFIX}{sha256_hex(indexed)}"
        return PayloadPlan(indexed_parameter(key, store_url), "indexed", {**stored_blobs, key: indexed}, nonce)
    stored = maybe_gzip(envelope)
    key = f"{PAYLOADS_PREFIX}{sha256_hex(stored)}"
    uploads = {**builder.stored_blobs, key: stored}
    return PayloadPlan(ref_parameter(stored, key, store_url), "ref", uploads, nonce)


def classify_failure(status: JobStatus, log_tail: Sequence[str]) -> JobFailedError:
    """Turn a FAILED job that wrote no result into the error the user sees."""
    reason = status.status_reason or "no reason given"
    tail = "\n".join(log_tail) if log_tail else "(no log lines)"
    detail = f"job {status.job_id}: {reason} (exit code {status.exit_code}, {status.attempts} attempt(s))"
    logs = f"\n--- last log lines ---\n{tail}"
    if status.exit_code == RunnerExit.BAD_PAYLOAD:
        return PayloadRejectedError(
            f"the job refused its payload before running anything (unsigned, tampered with, or signed with a key "
            f"its signing secret does not hold); {detail}{logs}",
            status.job_id,
            status.exit_code,
        )
    if reason.startswith(StatusReason.TIMEOUT):
        return JobTimeoutError(f"the task ran past its timeout and was stopped; {detail}{logs}", status.job_id, 143)
    if reason.startswith(SPOT_INTERRUPTION_PREFIXES):
        return SpotRetriesExhaustedError(
            "every attempt lost its Spot capacity (EC2 Spot or Fargate Spot); raise the retry attempts or use the "
            f"On-Demand queue (capability on_demand=1); {detail}{logs}",
            status.job_id,
            status.exit_code,
        )
    if reason.startswith(StatusReason.OVERRIDES_TOO_LONG):
        return OverridesTooLongError(
            f"AWS refused to start the job because its container overrides exceed 8,192 characters; {detail}",
            status.job_id,
            status.exit_code,
        )
    if status.exit_code == 137 or "OutOfMemory" in reason:
        return JobOutOfMemoryError(
            f"the container was killed for exceeding its memory; request more with the capability memory=<MiB>; "
            f"{detail}{logs}",
            status.job_id,
            137,
        )
    return JobFailedError(f"the job failed; {detail}{logs}", status.job_id, status.exit_code)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclasses.dataclass
class _Task:
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
class _Job:
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
    # For the usage log (see JobEngine._untrack):
    parent_described: bool = False  # an array parent whose queue and resources the recorder has
    described_final: bool = False  # a single job described in a final state; its figures in final_usage
    final_usage: JobUsage | None = None
    usage_tries: int = 0  # answered describes while it was owed one for usage
    usage_pending: list[tuple[str, Outcome]] = dataclasses.field(default_factory=list)  # (task id, outcome)


#: A task resolved from its listed result before its job (or array child) was described: (job, array index).
_Tentative = tuple[_Job, int | None]


class JobEngine:
    def __init__(
        self,
        backend: JobBackend,
        store: ObjectStore,
        settings: EngineSettings,
        keys: KeyRing,
        usage: UsageRecorder | None = None,
    ) -> None:
        self._backend = backend
        self._store = store
        self._settings = settings
        self._keys = keys
        self._usage = usage if usage is not None else UsageRecorder(None)
        self._tasks: dict[str, _Task] = {}
        self._pending: dict[tuple[object, ...], list[str]] = collections.OrderedDict()
        self._pending_since: dict[tuple[object, ...], float] = {}
        self._pending_last: dict[tuple[object, ...], float] = {}  # when the group's newest task arrived
        self._max_wait: dict[tuple[object, ...], float] = {}  # pack key -> its grown max wait, while a stream lasts
        self._jobs: dict[str, _Job] = {}
        self._uploaded: dict[str, float] = {}  # store key -> when this adapter last uploaded it
        self._awaiting: dict[str, float] = {}  # task id in a live job, not (yet) sent again -> grace deadline
        self._awaiting_job: dict[str, tuple[str, int | None]] = {}  # ... -> (job id, array index)
        #: Task id -> (job id, array index) of every task in a tracked job's ``tasks``: a listed result finds its
        #: task without a walk over every task in flight (10,000 of them, every reconcile round).
        self._homes: dict[str, tuple[str, int | None]] = {}
        self._read_results: collections.deque[tuple[float, str]] = collections.deque()  # (read at, task id)
        self._stored: dict[str, float] = {}  # task id with a result in the store, unclaimed -> grace deadline
        self._intake_open = True
        self._submitting = 0  # submissions in flight (a thread may be inside SubmitJob)
        self._settled = asyncio.Event()
        self._settled.set()
        self._wake_packer = asyncio.Event()
        self._wake_reconciler = asyncio.Event()
        self._results = ResultIO(store)
        self._resolving: set[asyncio.Task[None]] = set()  # results being read: the reconcile loop does not wait
        self._describe_due = 0.0  # when the next describe call is made (reconcile rounds list results meanwhile)
        self._describe_interval = settings.poll_interval_min_seconds
        self._usage_jobs: dict[str, _Job] = {}  # untracked jobs still owed a describe for the usage log
        self.stats: collections.Counter[str] = collections.Counter()

    @property
    def backend(self) -> JobBackend:
        return self._backend

    @property
    def store(self) -> ObjectStore:
        return self._store

    @property
    def usage(self) -> UsageRecorder:
        return self._usage

    async def close_usage(self, timeout_seconds: float = 10.0) -> str:
        """At exit: make the describes still owed to the usage log (bounded), close the log and return (and log)
        the one-line summary."""
        deadline = time.monotonic() + timeout_seconds
        while self._usage_jobs and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(
                    self._describe_round(time.monotonic()), timeout=max(0.0, deadline - time.monotonic())
                )
            except asyncio.TimeoutError:
                break
            if self._usage_jobs:  # jobs whose result arrived before Batch marked them final
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        left = sum(len(job.usage_pending) for job in self._usage_jobs.values())
        for job in list(self._usage_jobs.values()):
            self._settle_job_usage(job, None)
        left += self._usage.flush_unknown()
        if left:
            logger.warning("usage: %d job(s) recorded without their describe (not described in time)", left)
        line = self._usage.summary.one_line()
        logger.info(line)
        self._usage.close()
        return line

    # --- called by the adapter ----------------------------------------------------------------------------------

    def submit(self, work: TaskWork) -> asyncio.Future[TaskOutcome]:
        future: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
        task = self._tasks[work.task_id] = _Task(work=work, future=future)
        if self._attach(task):
            return future
        if self._stored.pop(work.task_id, None) is not None:
            asyncio.get_running_loop().create_task(self._deliver_stored(work))
            return future
        self._enqueue(work)
        return future

    def _enqueue(self, work: TaskWork) -> None:
        """Queue a task for the packer: it joins the group of tasks with the same pack key."""
        key = work.pack_key()
        self._pending.setdefault(key, []).append(work.task_id)
        self._pending_since.setdefault(key, time.monotonic())
        self._pending_last[key] = time.monotonic()
        self._wake_packer.set()

    async def cancel(self, task_id: str) -> bool:
        """Stop a task wherever it is. Returns False when the engine does not know it (already finished)."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        for ids in self._pending.values():
            if task_id in ids:
                ids.remove(task_id)
                break
        if task.job_id is not None:
            await self._cancel_job(task_id, task.job_id, task.state)
        if not task.future.done():
            task.future.cancel()
        self.stats["cancelled"] += 1
        return True

    async def _cancel_job(
        self, task_id: str, job_id: str, state: JobState | None, reason: str = "Cancelled by the Scaler client"
    ) -> None:
        try:
            await asyncio.to_thread(self._backend.cancel, job_id, state, reason)
            logger.info("task %s: cancelled job %s (last state %s)", task_id, job_id, state.value if state else "-")
        except BackendError as exc:
            logger.warning("task %s: cancelling job %s failed: %s", task_id, job_id, exc)

    async def run(self) -> None:
        try:
            await asyncio.gather(self._packer(), self._reconciler())
        finally:
            await asyncio.to_thread(self._results.close)

    # --- re-attachment ------------------------------------------------------------------------------------------

    async def take_stock(self) -> Stock:
        """Find this adapter's live jobs and stored results (before the adapter takes any task). Their tasks wait
        ``reattach_grace_seconds`` for Scaler to send them again."""
        try:
            stock = await asyncio.to_thread(
                take_stock, self._backend, self._store, job_name_prefix(self._settings.adapter_id),
                self._settings.queues, self._keys,
            )  # fmt: skip
        except (BackendError, StoreError) as exc:
            # Serving beats refusing: tasks sent again will run again, and their old jobs are not stopped.
            logger.error("taking stock of adapter %s's jobs failed; continuing without re-attach: %s",
                         self._settings.adapter_id, exc)  # fmt: skip
            return Stock(live_jobs=(), stored_results=frozenset())
        self.adopt(stock.live_jobs)
        for listed in stock.unreadable:  # ours by name, but nobody can ever claim it
            await self._cancel_job("(unknown)", listed.job_id, listed.state, "Its task table cannot be read")
        # Results in the store are delivered when their task comes again, but never deleted unclaimed: the prefix
        # may be shared with other adapters whose results these are (the bucket's lifecycle rule expires them).
        self._stored.update(dict.fromkeys(stock.stored_results, math.inf))
        logger.info("took stock for adapter id %s: %d live job(s) with %d task(s), %d stored result(s)",
                    self._settings.adapter_id, len(stock.live_jobs), sum(len(job.task_ids) for job in stock.live_jobs),
                    len(stock.stored_results))  # fmt: skip
        return stock

    def adopt(self, jobs: Sequence[FoundJob]) -> None:
        deadline = time.monotonic() + self._settings.reattach_grace_seconds
        for found in jobs:
            job = self._jobs.get(found.job_id)
            is_array = found.array_size is not None
            if job is None:
                job = self._jobs[found.job_id] = _Job(
                    found.job_id, {}, checked_at=time.monotonic(), state=found.state, is_array=is_array
                )
            for index, task_id in enumerate(found.task_ids):
                self._place(job, index if is_array else None, task_id)
                if task_id not in self._tasks:
                    self._awaiting[task_id] = deadline
                    self._awaiting_job[task_id] = (found.job_id, index if is_array else None)
        if jobs:
            self._wake_reconciler.set()

    def detach_all(self) -> None:
        """The scheduler went away: keep every submitted job, waiting for its task to be sent again (grace period);
        forget tasks not yet submitted (nobody waits for their results any more)."""
        deadline = time.monotonic() + self._settings.reattach_grace_seconds
        placed = {task_id: (job.job_id, index) for job in self._jobs.values() for index, task_id in job.tasks.items()}
        for task_id, task in list(self._tasks.items()):
            del self._tasks[task_id]
            if task_id in placed:
                self._awaiting[task_id] = deadline
                self._awaiting_job[task_id] = placed[task_id]
            task.future.cancel()
        for ids in self._pending.values():
            ids.clear()

    def _attach(self, task: _Task) -> bool:
        task_id = task.work.task_id
        if self._awaiting.pop(task_id, None) is None:
            return False
        job_id, index = self._awaiting_job.pop(task_id)
        job = self._jobs.get(job_id)
        if job is None or job.tasks.get(index) != task_id:
            return False
        task.job_id = job.job_id if index is None else f"{job.job_id}:{index}"
        task.state = job.state
        logger.info("task %s: attached to its live job %s", task_id, task.job_id)
        self.stats["attached"] += 1
        self._wake_reconciler.set()
        return True

    async def _deliver_stored(self, work: TaskWork) -> None:
        status = JobStatus(job_id="(stored result)", state=JobState.SUCCEEDED)
        try:
            read = await asyncio.to_thread(self._read_result, work.task_id, status)
        except StoreError as exc:
            logger.warning("task %s: reading its stored result failed, running it: %s", work.task_id, exc)
            read = None
        except ResultRejectedError as exc:  # not signed with our key: never taken, the task runs instead
            logger.warning("task %s: its stored result was refused, running it: %s", work.task_id, exc)
            read = None
        if read is None:  # gone meanwhile (or refused): run the task after all
            self._enqueue(work)
            return
        outcome, _ = read
        logger.info("task %s: delivered its stored result, no job submitted", work.task_id)
        self.stats["stored-delivered"] += 1
        self._finish(work.task_id, outcome)

    async def _delete_read_results(self, now: float) -> None:
        due: set[str] = set()
        while self._read_results and now - self._read_results[0][0] >= self._settings.result_delete_delay_seconds:
            due.add(self._read_results.popleft()[1])
        if due:
            self._delete_results(due)

    async def _expire_awaiting(self, now: float) -> None:
        """Stop the jobs (or array children) of tasks that were not sent again within the grace period; delete the
        results read a while ago."""
        await self._delete_read_results(now)
        unclaimed = {task_id for task_id, deadline in self._stored.items() if deadline <= now}
        for task_id in unclaimed:
            del self._stored[task_id]
        expired = {task_id for task_id, deadline in self._awaiting.items() if deadline <= now}
        if self._settings.delete_results and unclaimed:
            self._delete_results(unclaimed)
        if not expired:
            return
        for job in list(self._jobs.values()):
            mine = {index: task_id for index, task_id in job.tasks.items() if task_id in expired}
            if not mine:
                continue
            whole = len(mine) == len(job.tasks)
            targets = [job.job_id] if whole or None in mine else [f"{job.job_id}:{index}" for index in mine]
            for target in targets:
                await self._cancel_job("(not sent again)", target, job.state, "Its Scaler task was not sent again")
            for index in mine:
                self._unplace(job, index)
            if not job.tasks:
                del self._jobs[job.job_id]
            self.stats["grace-stopped"] += len(mine)
        for task_id in expired:
            del self._awaiting[task_id]
            self._awaiting_job.pop(task_id, None)
        if self._settings.delete_results:
            self._delete_results(expired)

    def _delete_results(self, task_ids: set[str]) -> None:
        for task_id in task_ids:
            self._results.discard(result_key(task_id))  # batched: DeleteObjects at the end of the round

    # --- shutdown -----------------------------------------------------------------------------------------------

    def close_intake(self) -> None:
        """Submit nothing new; tasks not yet submitted stay unsubmitted."""
        self._intake_open = False
        self._wake_packer.set()

    async def shutdown(self, *, stop_jobs: bool, timeout_seconds: float, parallel: int = 4) -> ShutdownReport:
        """Close intake, let submissions in flight settle, then stop every live job (paced by the backend's rate
        limits, ``parallel`` calls at a time) within ``timeout_seconds``; or, without ``stop_jobs``, leave them
        running for a later re-attach."""
        self.close_intake()
        deadline = time.monotonic() + timeout_seconds
        try:
            await asyncio.wait_for(self._settled.wait(), timeout=timeout_seconds)
        except asyncio.TimeoutError:
            logger.error("shutdown: %d submission(s) still in flight after %.0fs", self._submitting, timeout_seconds)
        await self._delete_read_results(math.inf)
        jobs = {job_id: job.state for job_id, job in self._jobs.items()}
        report = ShutdownReport(kept=[] if stop_jobs else sorted(jobs))
        if not stop_jobs:
            logger.info(
                "shutdown: left %d job(s) running for a later re-attach: %s", len(jobs), ", ".join(sorted(jobs))
            )
            return report
        queue: asyncio.Queue[tuple[str, JobState | None]] = asyncio.Queue()
        for item in jobs.items():
            queue.put_nowait(item)

        async def stopper() -> None:
            while not queue.empty():
                job_id, state = queue.get_nowait()
                if time.monotonic() > deadline:
                    report.failed.append(job_id)
                    continue
                try:
                    await asyncio.to_thread(self._backend.cancel, job_id, state, "The Scaler adapter shut down")
                    report.stopped.append(job_id)
                except BackendError as exc:
                    logger.error("shutdown: stopping job %s failed: %s", job_id, exc)
                    report.failed.append(job_id)

        await asyncio.gather(*(stopper() for _ in range(parallel)))
        logger.info("shutdown: stopped %d job(s)%s%s", len(report.stopped),
                    f": {', '.join(sorted(report.stopped))}" if report.stopped else "",
                    f"; could NOT stop {len(report.failed)}: {', '.join(sorted(report.failed))}" if report.failed
                    else "")  # fmt: skip
        return report

    # --- packing and submission ---------------------------------------------------------------------------------

    async def _packer(self) -> None:
        while self._intake_open:
            now = time.monotonic()
            due = [
                key
                for key in self._pending_since
                if self._due_at(key) <= now or len(self._pending[key]) >= self._settings.max_array_size
            ]
            for key in due:
                still_coming = self._pending_last[key] + self._settings.array_window_seconds > now
                ids = [task_id for task_id in self._pending.pop(key) if task_id in self._tasks]
                del self._pending_since[key], self._pending_last[key]
                # Cut by the bound while tasks kept arriving: gather longer next time. A pause (the scheduler hands
                # tasks over in bursts) halves it again, so that one gap does not undo a long stream's arrays.
                if still_coming:
                    self._max_wait[key] = min(2 * self._max_wait_for(key), self._settings.array_max_wait_cap_seconds)
                elif self._max_wait_for(key) / 2 > self._settings.array_max_wait_seconds:
                    self._max_wait[key] = self._max_wait_for(key) / 2
                else:
                    self._max_wait.pop(key, None)
                for start in range(0, len(ids), self._settings.max_array_size):
                    if not self._intake_open:
                        break
                    await self._submit_group(ids[start : start + self._settings.max_array_size])
            if self._pending_since:
                delay = max(0.0, min(self._due_at(key) for key in self._pending_since) - time.monotonic())
                try:
                    await asyncio.wait_for(self._wake_packer.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            else:
                await self._wake_packer.wait()
            self._wake_packer.clear()

    def _max_wait_for(self, key: tuple[object, ...]) -> float:
        return max(self._settings.array_window_seconds, self._max_wait.get(key, self._settings.array_max_wait_seconds))

    def _due_at(self, key: tuple[object, ...]) -> float:
        window = self._settings.array_window_seconds
        return min(self._pending_last[key] + window, self._pending_since[key] + self._max_wait_for(key))

    def _spec_for(self, works: Sequence[TaskWork]) -> JobSpec:
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

    def _prepare_and_submit(
        self, works: list[TaskWork], nonce: str, maybe_submitted: bool = False
    ) -> tuple[str, str, tuple[str, ...]]:
        """Blocking: plan the payload, upload what must be stored, submit. Runs in a worker thread. After an
        ambiguous failure (``maybe_submitted``: a 5xx or a lost connection), a live job of the same name is the
        earlier submission, and is taken instead of submitting a second one."""
        spec = self._spec_for(works)
        if maybe_submitted:
            for listed in self._backend.find_jobs(spec.name, (spec.queue,)):
                if listed.name == spec.name and not listed.state.is_final:
                    logger.info("job %s (%s) was submitted despite the error; using it", listed.job_id, spec.name)
                    return listed.job_id, "earlier submission", ()
        plan = plan_payload(
            [work.blobs for work in works], spec=spec, backend=self._backend, store_url=self._store.url,
            settings=self._settings, keys=self._keys, nonce=nonce,
        )  # fmt: skip
        now = time.monotonic()
        for key, data in plan.uploads.items():
            # Content-addressed, so the same function is uploaded once; but again after a while, because the
            # bucket's lifecycle rule expires objects and a long-running adapter must not point at expired ones.
            uploaded_at = self._uploaded.get(key)
            if uploaded_at is None or now - uploaded_at > self._settings.reupload_after_seconds:
                self._store.put(key, data)
                self._uploaded[key] = now
        job_id = self._backend.submit(dataclasses.replace(spec, payload=plan.parameter))
        return job_id, plan.transport, tuple(plan.uploads)

    async def _submit_group(self, task_ids: list[str]) -> None:
        works = [self._tasks[task_id].work for task_id in task_ids]
        maybe_submitted = any(self._tasks[task_id].maybe_submitted for task_id in task_ids)
        started = time.monotonic()
        for task_id in task_ids:
            first_try = self._tasks[task_id]
            if first_try.submit_deadline is None:
                first_try.submit_deadline = started + self._settings.submit_deadline_seconds
        # One nonce per group, kept across retries: a job an ambiguous failure did create carries the same one.
        nonce = self._tasks[task_ids[0]].nonce or new_nonce()
        self._submitting += 1
        self._settled.clear()
        try:
            for task_id in task_ids:
                self._tasks[task_id].nonce = nonce
            job_id, transport, uploads = await asyncio.to_thread(
                self._prepare_and_submit, works, nonce, maybe_submitted
            )
        except (BackendUnavailableError, StoreUnavailableError) as exc:
            self._requeue_or_fail(task_ids, exc)
            return
        except (BackendError, StoreError, ValueError) as exc:
            logger.error("submitting %d task(s) failed: %s", len(works), exc)
            error = SubmitError(f"{self._backend.name} refused the job: {exc}")
            for task_id in task_ids:
                self._finish(task_id, TaskOutcome(False, pickle.dumps(error)))
            return
        finally:
            self._submitting -= 1
            if self._submitting == 0:
                self._settled.set()

        self.stats[f"transport:{transport}"] += len(works)
        self.stats["jobs:array" if len(works) > 1 else "jobs:single"] += 1
        now = time.monotonic()
        job = _Job(job_id=job_id, tasks={}, checked_at=now, queue=works[0].queue, resources=works[0].resources,
                   is_array=len(works) > 1)  # fmt: skip
        for index, task_id in enumerate(task_ids):
            position = None if len(task_ids) == 1 else index
            task_job_id = job_id if position is None else f"{job_id}:{position}"
            task = self._tasks.get(task_id)
            if task is None:  # cancelled while the job was being submitted: stop its job (or child) now
                await self._cancel_job(task_id, task_job_id, None)
                job.failed_resolved += 1
                continue
            task.job_id, task.uploads = task_job_id, uploads
            self._place(job, position, task_id)
        if job.tasks:
            self._jobs[job_id] = job
        logger.info(
            "submitted %s job %s for %d task(s), payload %s, in %.3fs",
            self._backend.name, job_id, len(works), transport, now - started,
        )  # fmt: skip
        self._wake_reconciler.set()

    def _requeue_or_fail(self, task_ids: list[str], exc: BackendUnavailableError | StoreUnavailableError) -> None:
        """A transient failure: put the tasks back with backoff until their submit deadline, then fail them with the
        hint of the error class (throttling says "lower the rate", a 5xx says "AWS's side, retry later")."""
        now = time.monotonic()
        live = [task_id for task_id in task_ids if task_id in self._tasks]
        due = [task_id for task_id in live if (self._tasks[task_id].submit_deadline or now) <= now]
        retry = [task_id for task_id in live if task_id not in due]
        hint = exc.hint if isinstance(exc, BackendUnavailableError) else ""
        ambiguous = isinstance(exc, BackendUnavailableError) and exc.maybe_applied
        for task_id in live:
            self._tasks[task_id].maybe_submitted |= ambiguous
        for task_id in due:
            error = SubmitError(
                f"{self._backend.name} could not accept the job for {self._settings.submit_deadline_seconds:.0f}s: "
                f"{exc}" + (f" ({hint})" if hint and hint not in str(exc) else "")
            )
            self._finish(task_id, TaskOutcome(False, pickle.dumps(error)))
        if not retry:
            logger.error("submitting %d task(s) failed for good: %s", len(due), exc)
            return
        attempt = self.stats["submit:requeued"] = self.stats["submit:requeued"] + 1
        delay = min(30.0, 0.5 * 2 ** min(attempt, 6)) * (0.5 + random.random() / 2)  # jittered
        key = self._tasks[retry[0]].work.pack_key()
        self._pending.setdefault(key, []).extend(retry)
        # The packer submits a key when _due_at passes: date the group so that it comes due after the delay.
        window = self._settings.array_window_seconds
        longest = self._max_wait_for(key)
        self._pending_since[key] = min(self._pending_since.get(key, math.inf), now + delay - longest)
        self._pending_last[key] = min(self._pending_last.get(key, math.inf), now + delay - window)
        self._wake_packer.set()
        logger.warning("submitting %d task(s) met a transient error; retrying in %.1fs: %s", len(retry), delay, exc)

    # --- reconcile loop -----------------------------------------------------------------------------------------

    async def _describe(self, job_ids: Sequence[str]) -> tuple[dict[str, JobStatus], set[str]]:
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
                self.stats["describe:failed"] += 1
        return statuses, answered

    async def _reconciler(self) -> None:
        interval = self._settings.poll_interval_min_seconds
        while True:
            if not self._jobs and not self._usage_jobs:
                self._wake_reconciler.clear()
                # Read results are still deleted and unclaimed ones still expire while no job runs.
                idle = self._settings.result_delete_delay_seconds if self._read_results else None
                try:
                    await asyncio.wait_for(
                        self._wake_reconciler.wait(), timeout=idle or self._settings.reattach_grace_seconds
                    )
                except asyncio.TimeoutError:
                    await self._expire_awaiting(time.monotonic())
                    self._results.flush()
                    continue
                interval = self._settings.poll_interval_min_seconds
                # Jobs again after an idle spell: describe them soon, then less and less often.
                self._describe_due, self._describe_interval = 0.0, interval
            try:
                await asyncio.wait_for(self._wake_reconciler.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            self._wake_reconciler.clear()
            await self._expire_awaiting(time.monotonic())
            changed = await self._reconcile_once()
            self._results.flush()
            if changed:
                interval = self._settings.poll_interval_min_seconds
            else:
                interval = min(interval * 1.5, self._settings.poll_interval_max_seconds)

    async def _reconcile_once(self) -> bool:
        """One round: results first (one store listing, no Batch call), then a describe call when it is due."""
        changed = await self._resolve_listed()
        now = time.monotonic()
        if now >= self._describe_due:
            eventful = await self._describe_round(now)
            changed |= eventful
            # Describe calls report what results cannot (failures, RUNNABLE, usage): often while that happens,
            # rarely while results keep arriving through the listings.
            if eventful:
                self._describe_interval = self._settings.poll_interval_min_seconds
            else:
                self._describe_interval = min(self._describe_interval * 2, self._settings.describe_interval_max_seconds)
            self._describe_due = time.monotonic() + self._describe_interval
        return changed

    async def _resolve_listed(self) -> bool:
        """Resolve every task whose result object is listed, single job or array child, without a Batch call.
        Tentative: a result that fails its checks (planted before the job ran, left by an earlier run) puts the task
        back into its job, and the job's own final state decides."""
        if not any(index not in job.refused for job in self._jobs.values() for index in job.tasks):
            return False
        try:
            listing = await asyncio.to_thread(self._store.list_keys, RESULTS_PREFIX)
        except StoreError as exc:
            logger.warning("listing results failed, will retry: %s", exc)
            return False
        progressed = False
        emptied: dict[str, _Job] = {}
        for key in listing:
            task_id = key[len(RESULTS_PREFIX) :]
            home = self._homes.get(task_id)
            job = self._jobs.get(home[0]) if home is not None else None
            if home is None or job is None or job.tasks.get(index := home[1]) != task_id or index in job.refused:
                continue
            if task_id in self._awaiting:  # nobody asked yet: keep the result for the re-send
                self._keep_stored(task_id)
            else:
                child = JobStatus(job_id=job.job_id if index is None else f"{job.job_id}:{index}",
                                  state=JobState.SUCCEEDED)  # fmt: skip
                self._start_resolve(task_id, child, tentative=(job, index))
            self._unplace(job, index)
            job.ok_resolved += 1
            progressed = True
            if not job.tasks:
                emptied[job.job_id] = job
        for job in emptied.values():
            self._untrack(job)
        return progressed

    def _place(self, job: _Job, index: int | None, task_id: str) -> None:
        job.tasks[index] = task_id
        self._homes[task_id] = (job.job_id, index)

    def _unplace(self, job: _Job, index: int | None) -> None:
        task_id = job.tasks.pop(index)
        if self._homes.get(task_id) == (job.job_id, index):
            del self._homes[task_id]

    def _drop_job(self, job: _Job) -> None:
        """Stop tracking ``job`` whatever tasks it still names (the caller resolves them)."""
        self._jobs.pop(job.job_id, None)
        for index, task_id in job.tasks.items():
            if self._homes.get(task_id) == (job.job_id, index):
                del self._homes[task_id]

    def _untrack(self, job: _Job) -> None:
        """Every task of ``job`` is resolved (or resolving). Its usage still needs one describe of the job (its own
        figures) or of its array parent (its children's queue and resources), made in a later describe round."""
        self._jobs.pop(job.job_id, None)
        if not (job.described_final or job.parent_described):
            self._usage_jobs[job.job_id] = job

    async def _describe_round(self, now: float) -> bool:
        """Describe every tracked job (and those still owed a usage describe): state changes, RUNNABLE jobs,
        vanished jobs, and tasks whose jobs failed without a result. True when something happened that the next
        describe should follow closely."""
        owed = [job_id for job_id in self._usage_jobs if job_id not in self._jobs]
        statuses, answered = await self._describe([*self._jobs, *owed])
        eventful = False
        for job in list(self._jobs.values()):
            status = statuses.get(job.job_id)
            if job.job_id not in answered:  # the call failed: the vanish clock pauses
                job.checked_at = now
                continue
            if status is None:
                job.missing_seconds += now - job.checked_at
                job.checked_at = now
                if job.missing_seconds > self._settings.vanish_bound_seconds:
                    await self._vanish(job)
                    eventful = True
                continue
            job.checked_at, job.missing_seconds = now, 0.0
            if status.state is not job.state:
                logger.info("job %s: %s -> %s", job.job_id, job.state.value if job.state else "-", status.state.value)
                job.state = status.state
            self._note_usage(job, status)
            await self._watch_runnable(job, status, now)
            if None in job.tasks:
                task = self._tasks.get(job.tasks[None])
                if task is not None:
                    task.state = status.state
                if status.state.is_final:
                    if job.tasks[None] in self._awaiting:  # nobody asked yet: keep the result for the re-send
                        self._keep_stored(job.tasks[None])
                    else:
                        self._start_resolve(job.tasks[None], status)
                    self._drop_job(job)
                    eventful = True
            else:
                eventful |= await self._reconcile_array(job, status)
        for job_id in owed:
            status = statuses.get(job_id)
            owed_job = self._usage_jobs.get(job_id)  # a refused result may have put it back meanwhile
            if owed_job is None or job_id not in answered:
                continue
            job = owed_job
            if status is not None:
                self._note_usage(job, status)
            job.usage_tries += 1
            if job.described_final or job.parent_described or job.usage_tries >= _USAGE_TRIES:
                self._settle_job_usage(job, status)
        return eventful

    async def _reconcile_array(self, job: _Job, parent: JobStatus) -> bool:
        """Array children whose results were not listed: describe them only when the parent's summary counts
        more failures than resolved, or the parent is final (a failure carries a reason and logs)."""
        summary = parent.array_summary or {}
        progressed = False
        for index, task_id in list(job.tasks.items()):
            if task_id not in self._tasks and task_id not in self._awaiting:  # cancelled; Batch counts it FAILED
                self._unplace(job, index)
                job.failed_resolved += 1
        if job.tasks and (summary.get(JobState.FAILED, 0) > job.failed_resolved or parent.state.is_final):
            child_ids = [f"{job.job_id}:{index}" for index in job.tasks if index is not None]
            statuses, _ = await self._describe(child_ids)
            for index, task_id in list(job.tasks.items()):
                status = statuses.get(f"{job.job_id}:{index}")
                if status is None or not status.state.is_final:
                    continue
                if task_id in self._awaiting:
                    self._keep_stored(task_id)
                else:
                    self._start_resolve(task_id, status)
                self._unplace(job, index)
                if status.state is JobState.SUCCEEDED:
                    job.ok_resolved += 1
                else:
                    job.failed_resolved += 1
                progressed = True
        if not job.tasks:
            self._untrack(job)
        return progressed

    # --- usage --------------------------------------------------------------------------------------------------

    def _note_usage(self, job: _Job, status: JobStatus) -> None:
        """Take what a describe of ``job`` says for the usage log: an array parent's queue and resources (its
        children are recorded from their results), or a finished single job's own figures."""
        if status.array_summary is not None or job.is_array:
            if not job.parent_described:
                job.parent_described = True
                self._usage.parent_described(job.job_id, status.usage or self._known_usage(job))
        elif status.state.is_final:
            job.described_final = True
            job.final_usage = status.usage

    def _known_usage(self, job: _Job) -> JobUsage:
        """What the adapter itself knows of a job, for backends whose describe reports no usage."""
        return JobUsage(queue=job.queue, vcpus=float(job.resources.vcpus or 0),
                        memory_mib=job.resources.memory_mib or 0, gpus=job.resources.gpus or 0)  # fmt: skip

    def _settle_job_usage(self, job: _Job, status: JobStatus | None) -> None:
        """A job no longer tracked got its usage describe (or ran out of tries): record what waited for it."""
        del self._usage_jobs[job.job_id]
        if not job.parent_described and job.is_array:
            job.parent_described = True
            self._usage.parent_described(job.job_id, self._known_usage(job))
        for task_id, outcome in job.usage_pending:
            self._usage.record(job.job_id, [task_id], outcome, job.final_usage)
        job.usage_pending.clear()

    def _keep_stored(self, task_id: str) -> None:
        """A task waiting to be sent again finished: its result stays stored for the re-send, within the grace."""
        self._stored[task_id] = self._awaiting.pop(task_id)
        self._awaiting_job.pop(task_id, None)

    async def _watch_runnable(self, job: _Job, status: JobStatus, now: float) -> None:
        """Log once, with the backend's diagnosis, a job that has waited in RUNNABLE longer than the bound."""
        summary = status.array_summary or {}
        started = (JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED)
        waiting = status.state is JobState.RUNNABLE or (
            summary.get(JobState.RUNNABLE, 0) > 0 and not any(summary.get(state, 0) for state in started)
        )
        if not waiting:
            job.runnable_since = None
            return
        if job.runnable_since is None:
            job.runnable_since = now
        if job.runnable_explained or now - job.runnable_since <= self._settings.runnable_warn_seconds:
            return
        job.runnable_explained = True
        try:
            diagnosis = await asyncio.to_thread(self._backend.explain_runnable, job.queue, job.resources)
        except BackendError as exc:
            diagnosis = f"the queue could not be described ({exc})"
        logger.warning("job %s has been RUNNABLE for %.0fs (--runnable-warn-after %.0fs): %s", job.job_id,
                       now - job.runnable_since, self._settings.runnable_warn_seconds,
                       diagnosis or "no diagnosis from this backend")  # fmt: skip
        self.stats["runnable-explained"] += 1

    async def _vanish(self, job: _Job) -> None:
        logger.error("job %s: %s answered without it for %.0fs; failing its tasks and stopping it", job.job_id,
                     self._backend.name, job.missing_seconds)  # fmt: skip
        self._drop_job(job)
        for index, task_id in job.tasks.items():
            job_id = job.job_id if index is None else f"{job.job_id}:{index}"
            error = JobVanishedError(
                f"job {job_id} is no longer reported by {self._backend.name}: its describe calls answered without it "
                f"for {self._settings.vanish_bound_seconds:.0f}s (failed calls do not count), so its result can "
                "never arrive. The job was also asked to stop. Resubmit the task.",
                job_id,
            )
            self._awaiting.pop(task_id, None)
            self._awaiting_job.pop(task_id, None)
            self._finish(task_id, TaskOutcome(False, pickle.dumps(error)))
        # Stop it anyway, in case it still runs somewhere the backend no longer reports.
        await self._cancel_job("(vanished)", job.job_id, None, "Vanished from the adapter's view")

    def _read_result(
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
        task = self._tasks.get(task_id)
        nonce = task.nonce if task is not None and task.nonce and not any_submission else None
        envelope = decode_result(data, self._keys, expected_task_id=task_id, expected_nonce=nonce)
        self._forget_uploads(envelope.bad_objects)
        if self._settings.delete_results:
            self._read_results.append((time.monotonic(), task_id))  # deleted once handed over (see settings)
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

    def _forget_uploads(self, keys: Sequence[str]) -> None:
        """Stored objects found tampered with or corrupt: upload them again for the next task that needs them."""
        for key in keys:
            if self._uploaded.pop(key, None) is not None:
                logger.warning("stored object %s did not match its digest; it will be uploaded again", key)

    def _start_resolve(self, task_id: str, status: JobStatus, *, tentative: _Tentative | None = None) -> None:
        """Read the task's result in the background: concurrent with other reads and with the next round."""
        resolving = asyncio.create_task(
            self._resolve(task_id, status, tentative=tentative), name=f"resolve-{task_id[:12]}"
        )
        self._resolving.add(resolving)
        resolving.add_done_callback(self._resolved)

    def _resolved(self, resolving: asyncio.Task[None]) -> None:
        self._resolving.discard(resolving)
        if self._read_results and not self._jobs and not self._usage_jobs:
            # An idle reconcile loop must come round to delete it. A busy one comes round within its interval: waking
            # it here would list the results prefix again after every burst of reads (8 listings a second at 10,000
            # tasks, each serializing up to 1,000 keys).
            self._wake_reconciler.set()
        if not resolving.cancelled() and resolving.exception() is not None:
            logger.error("%s crashed; its task got no result", resolving.get_name(), exc_info=resolving.exception())
        if not self._resolving:
            self._results.flush()  # the burst of reads is over: delete its results now, in as few calls as possible

    async def _resolve(self, task_id: str, status: JobStatus, *, tentative: _Tentative | None = None) -> None:
        """Finish the task from its result or from the job's failure. With ``tentative`` (a task whose result was
        listed, its job not described), a result that fails its checks, or is gone, puts the task back into its
        job instead: the job's own final state decides."""
        task = self._tasks.get(task_id)
        if task is None:
            return
        pause = 0.5
        read: tuple[TaskOutcome, JobUsage] | None = None
        outcome: TaskOutcome | None = None
        any_submission = False
        while True:
            try:
                read = await self._results.call(self._read_result, task_id, status, any_submission)
            except StoreUnavailableError as exc:  # throttled (SlowDown), 5xx, credentials: read it again later
                logger.warning("task %s: reading its result failed, retrying in %.1fs: %s", task_id, pause, exc)
                self.stats["result:retried"] += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                if task_id not in self._tasks:
                    return
                continue
            except StoreError as exc:
                outcome = TaskOutcome(False, pickle.dumps(exc))
            except ResultFromAnotherSubmissionError as exc:
                if tentative is not None:  # its own job may still write its own: the job's final state decides
                    logger.warning("task %s: result of job %s refused: %s", task_id, status.job_id, exc)
                    self._put_back(task_id, *tentative)
                    return
                # The job ended and a genuinely signed result of this very task is stored: another submission of it
                # ran at the same time (Scaler sent the task again to another adapter) and wrote last. It is a
                # result of the same function and arguments; failing the task instead would lose it.
                logger.warning("task %s: job %s ended; the stored result was written by another submission of the "
                               "same task, which ran at the same time: taking it", task_id, status.job_id)  # fmt: skip
                self.stats["result:other-submission"] += 1
                any_submission = True
                continue
            except ResultRejectedError as exc:
                logger.warning("task %s: result of job %s refused: %s", task_id, status.job_id, exc)
                if tentative is not None:
                    self._put_back(task_id, *tentative)
                    return
                outcome = TaskOutcome(False, pickle.dumps(exc))
            break
        if read is None and outcome is None and tentative is not None:  # listed, then gone: the job decides
            self._put_back(task_id, *tentative)
            return
        if read is not None:
            outcome, measured = read
            kind = Outcome.SUCCESS if outcome.success else Outcome.TASK_ERROR
            self._record_usage(task_id, status, kind, measured, tentative)
        elif outcome is None:
            if status.state is JobState.SUCCEEDED:
                error: JobFailedError = ResultMissingError(
                    f"job {status.job_id} SUCCEEDED but its result {result_key(task_id)} is missing from "
                    f"{self._store.url}; check that nothing else (a lifecycle rule, another adapter) deletes "
                    "objects under this prefix",
                    status.job_id,
                    status.exit_code,
                )
            elif self._moved_to_on_demand(task, status):
                self._usage.record(status.job_id, [task_id], Outcome.JOB_FAILED, status.usage)  # its Spot attempts
                return
            else:
                tail = await asyncio.to_thread(self._backend.log_tail, status.job_id, self._settings.log_tail_lines)
                error = classify_failure(status, tail)
                if isinstance(error, PayloadRejectedError):
                    self._forget_uploads(task.uploads)
            logger.warning("task %s: %s", task_id, str(error).splitlines()[0])
            outcome = TaskOutcome(False, pickle.dumps(error))
            self._usage.record(status.job_id, [task_id], Outcome.JOB_FAILED, status.usage)
        else:
            self._usage.record(status.job_id, [task_id], Outcome.JOB_FAILED, status.usage)
        self._finish(task_id, outcome)

    def _put_back(self, task_id: str, job: _Job, index: int | None) -> None:
        """A listed result was refused or is gone: the task waits in its job again, for the job's final state."""
        self._place(job, index, task_id)
        job.ok_resolved -= 1
        job.refused.add(index)
        self._usage_jobs.pop(job.job_id, None)
        self._jobs.setdefault(job.job_id, job)
        self._describe_due = 0.0  # the job's describe decides now: do not wait for the backed-off interval
        self._wake_reconciler.set()

    def _record_usage(
        self, task_id: str, status: JobStatus, kind: Outcome, measured: JobUsage, tentative: _Tentative | None
    ) -> None:
        """Usage of a task resolved from its result: a described job's own figures; an array child's from its
        runner and its parent's describe; a single job's once its describe (owed, see _untrack) says final."""
        if tentative is None:
            self._usage.record(status.job_id, [task_id], kind, status.usage)
            return
        job, index = tentative
        if index is not None:
            self._usage.record_child(status.job_id, task_id, kind, measured)
        elif job.job_id in self._usage_jobs:
            job.usage_pending.append((task_id, kind))
        else:
            self._usage.record(job.job_id, [task_id], kind, job.final_usage)

    def _moved_to_on_demand(self, task: _Task, status: JobStatus) -> bool:
        """After enough Spot reclaims, queue the task again for the On-Demand queue instead of failing it."""
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
        task_id = task.work.task_id
        logger.warning("task %s: %d Spot reclaims (job %s); its next attempt goes to the On-Demand queue %s",
                       task_id, task.spot_reclaims, status.job_id, on_demand)  # fmt: skip
        task.work = dataclasses.replace(task.work, queue=on_demand)
        task.job_id, task.state = None, None
        self._enqueue(task.work)
        self.stats["moved-to-on-demand"] += 1
        return True

    def _finish(self, task_id: str, outcome: TaskOutcome) -> None:
        task = self._tasks.pop(task_id, None)
        if task is None or task.future.done():
            return
        self.stats["succeeded" if outcome.success else "failed"] += 1
        task.future.set_result(outcome)
