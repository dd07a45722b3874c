"""The shared job engine: everything a backend does not do.

- **Packing.** Tasks that share serializer, resources, queue and timeout gather until none has arrived for
  ``array_window_seconds`` (or the first has waited ``array_max_wait_seconds``, or 10,000 are there) and become one
  array job (2..10,000 children) with one payload; a lone task becomes a single job.
- **Payload planning.** Inline while the rendered container overrides stay inside AWS's 8,192-character budget
  (measured by the backend, not guessed), gzip when that makes it fit, otherwise large blobs go to the store as
  content-addressed objects and, if still needed, the payload itself goes to the store and only a reference travels.
- **One reconcile loop** for all jobs: DescribeJobs in chunks of at most ``backend.max_describe_batch``; array
  parents are read through their status summary and children are described only once some have finished; the
  interval adapts; a job that vanishes fails its tasks after ``vanish_bound_seconds``.
- **Outcomes.** A finished job's result object is read from the store, its signature and its nonce (which binds it
  to this submission) checked, and handed over as bytes, never unpickled; reads run concurrently in the background
  and results are deleted in batches (:mod:`scaler_aws_batch.results`). A FAILED job
  without a result becomes a clear error (timeout, Spot retries exhausted, overrides too long, out of memory,
  non-zero exit) carrying the job's last log lines.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import pickle
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

from scaler_aws_batch.backends.base import BackendError, JobBackend, JobSpec, JobState, JobStatus, Resources
from scaler_aws_batch.contracts import (
    SPOT_INTERRUPTION_PREFIXES,
    SPOT_RECLAIMS_BEFORE_ON_DEMAND,
    JobTag,
    RunnerExit,
    StatusReason,
)
from scaler_aws_batch.errors import (
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    JobVanishedError,
    ObjectMissingError,
    OverridesTooLongError,
    PayloadRejectedError,
    ResultMissingError,
    ResultRejectedError,
    SpotRetriesExhaustedError,
    StoreError,
    SubmitError,
)
from scaler_aws_batch.limits import MAX_ARRAY_SIZE, MAX_CONTAINER_OVERRIDES_CHARS, OVERRIDES_SAFETY_MARGIN_CHARS
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
    inline_parameter,
    maybe_gzip,
    ref_parameter,
    result_key,
    sha256_hex,
)

logger = logging.getLogger(__name__)

_NO_STORE = 1 << 62  # a store threshold no blob reaches: everything inline


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    adapter_id: str
    client_python: str
    cloudpickle_version: str
    job_timeout_seconds: int = 3600
    array_window_seconds: float = 0.05
    #: A steady stream of tasks keeps extending the window; the first task waits at most this long.
    array_max_wait_seconds: float = 2.0
    max_array_size: int = MAX_ARRAY_SIZE
    poll_interval_min_seconds: float = 0.05
    poll_interval_max_seconds: float = 2.0
    vanish_bound_seconds: float = 60.0
    store_threshold_bytes: int = 2048
    overrides_budget_chars: int = MAX_CONTAINER_OVERRIDES_CHARS - OVERRIDES_SAFETY_MARGIN_CHARS
    log_tail_lines: int = 20
    job_name_prefix: str = "scaler"
    delete_results: bool = True
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
        if self.poll_interval_min_seconds <= 0 or self.poll_interval_max_seconds < self.poll_interval_min_seconds:
            raise ValueError("poll intervals must be positive, with min <= max")
        if self.job_timeout_seconds <= 0:
            raise ValueError(f"job timeout must be positive, got {self.job_timeout_seconds}")
        if self.spot_reclaims_before_on_demand < 1:
            raise ValueError(
                f"--spot-reclaims-before-on-demand must be at least 1, got {self.spot_reclaims_before_on_demand}"
            )
        if self.runnable_warn_seconds <= 0:
            raise ValueError(f"--runnable-warn-after must be positive, got {self.runnable_warn_seconds}")
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
    transport: str  # inline | inline-gzip | inline+objects | ref
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

    for threshold, label in ((_NO_STORE, "inline"), (settings.store_threshold_bytes, "inline+objects")):
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
    nonce: str = ""  # the nonce of the payload that carries this task; its result must echo it
    spot_reclaims: int = 0  # over every job this task ran in
    uploads: tuple[str, ...] = ()  # store keys that payload refers to


@dataclasses.dataclass
class _Job:
    job_id: str
    tasks: dict[int | None, str]  # array index (None for a single job) -> task id
    last_seen: float
    state: JobState | None = None
    queue: str | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    runnable_since: float | None = None  # when the job was first seen waiting for capacity
    runnable_explained: bool = False
    ok_resolved: int = 0  # array children resolved with a result
    failed_resolved: int = 0  # array children resolved as failures, or cancelled (Batch counts those FAILED)


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
        self._jobs: dict[str, _Job] = {}
        self._uploaded: dict[str, float] = {}  # store key -> when this adapter last uploaded it
        self._wake_packer = asyncio.Event()
        self._wake_reconciler = asyncio.Event()
        self._results = ResultIO(store)
        self._resolving: set[asyncio.Task[None]] = set()  # results being read: the reconcile loop does not wait
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
        """At exit: describe the array children still missing from the usage log (bounded), close the log and
        return (and log) the one-line summary."""
        deadline = time.monotonic() + timeout_seconds
        while self._usage.deferred and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._settle_usage(final=True), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if self._usage.deferred:  # children whose result arrived before Batch marked them final
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if left := self._usage.flush_unknown():
            logger.warning("usage: %d job(s) recorded with unknown usage (not described in time)", left)
        line = self._usage.summary.one_line()
        logger.info(line)
        self._usage.close()
        return line

    async def _settle_usage(self, *, final: bool = False) -> None:
        if self._usage.deferred:
            await self._usage.settle(self._describe_usage, active_parents=None if final else set(self._jobs))

    async def _describe_usage(self, job_ids: Sequence[str]) -> dict[str, JobUsage | None]:
        return {job_id: status.usage for job_id, status in (await self._describe(job_ids)).items()}

    # --- called by the adapter ----------------------------------------------------------------------------------

    def submit(self, work: TaskWork) -> asyncio.Future[TaskOutcome]:
        future: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
        self._tasks[work.task_id] = _Task(work=work, future=future)
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

    async def _cancel_job(self, task_id: str, job_id: str, state: JobState | None) -> None:
        try:
            await asyncio.to_thread(self._backend.cancel, job_id, state, "Cancelled by the Scaler client")
            logger.info("task %s: cancelled job %s (last state %s)", task_id, job_id, state.value if state else "-")
        except BackendError as exc:
            logger.warning("task %s: cancelling job %s failed: %s", task_id, job_id, exc)

    async def run(self) -> None:
        try:
            await asyncio.gather(self._packer(), self._reconciler())
        finally:
            await asyncio.to_thread(self._results.close)

    # --- packing and submission ---------------------------------------------------------------------------------

    async def _packer(self) -> None:
        while True:
            now = time.monotonic()
            due = [
                key
                for key in self._pending_since
                if self._due_at(key) <= now or len(self._pending[key]) >= self._settings.max_array_size
            ]
            for key in due:
                ids = [task_id for task_id in self._pending.pop(key) if task_id in self._tasks]
                del self._pending_since[key], self._pending_last[key]
                for start in range(0, len(ids), self._settings.max_array_size):
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

    def _due_at(self, key: tuple[object, ...]) -> float:
        window = self._settings.array_window_seconds
        longest = max(window, self._settings.array_max_wait_seconds)
        return min(self._pending_last[key] + window, self._pending_since[key] + longest)

    def _spec_for(self, work: TaskWork, count: int) -> JobSpec:
        first = work.task_id
        return JobSpec(
            name=f"{self._settings.job_name_prefix}-{first[:32]}" + (f"-x{count}" if count > 1 else ""),
            payload="",
            resources=work.resources,
            timeout_seconds=work.timeout_seconds or self._settings.job_timeout_seconds,
            tags={**self._settings.user_tags, JobTag.ADAPTER_ID: self._settings.adapter_id, JobTag.TASK_ID: first},
            array_size=count if count > 1 else None,
            queue=work.queue,
        )

    def _prepare_and_submit(self, works: list[TaskWork]) -> tuple[str, PayloadPlan]:
        """Blocking: plan the payload, upload what must be stored, submit. Runs in a worker thread."""
        spec = self._spec_for(works[0], len(works))
        plan = plan_payload(
            [work.blobs for work in works], spec=spec, backend=self._backend, store_url=self._store.url,
            settings=self._settings, keys=self._keys, nonce=new_nonce(),
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
        return job_id, plan

    async def _submit_group(self, task_ids: list[str]) -> None:
        works = [self._tasks[task_id].work for task_id in task_ids]
        started = time.monotonic()
        try:
            job_id, plan = await asyncio.to_thread(self._prepare_and_submit, works)
        except (BackendError, StoreError, ValueError) as exc:
            logger.error("submitting %d task(s) failed: %s", len(works), exc)
            error = SubmitError(f"{self._backend.name} refused the job: {exc}")
            for task_id in task_ids:
                self._finish(task_id, TaskOutcome(False, pickle.dumps(error)))
            return
        transport = plan.transport
        self.stats[f"transport:{transport}"] += len(works)
        self.stats["jobs:array" if len(works) > 1 else "jobs:single"] += 1
        now = time.monotonic()
        job = _Job(job_id=job_id, tasks={}, last_seen=now, queue=works[0].queue, resources=works[0].resources)
        for index, task_id in enumerate(task_ids):
            position = None if len(task_ids) == 1 else index
            task_job_id = job_id if position is None else f"{job_id}:{position}"
            task = self._tasks.get(task_id)
            if task is None:  # cancelled while the job was being submitted: stop its job (or child) now
                await self._cancel_job(task_id, task_job_id, None)
                job.failed_resolved += 1
                continue
            task.job_id, task.nonce, task.uploads = task_job_id, plan.nonce, tuple(plan.uploads)
            job.tasks[position] = task_id
        if job.tasks:
            self._jobs[job_id] = job
        logger.info(
            "submitted %s job %s for %d task(s), payload %s, in %.3fs",
            self._backend.name, job_id, len(works), transport, now - started,
        )  # fmt: skip
        self._wake_reconciler.set()

    # --- reconcile loop -----------------------------------------------------------------------------------------

    async def _describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        for chunk in _chunks(job_ids, self._backend.max_describe_batch):
            try:
                statuses.update(await asyncio.to_thread(self._backend.describe, chunk))
            except BackendError as exc:
                # Throttled past the backend's own retries: skip this round; the next one catches up.
                logger.warning("describe of %d job(s) failed, will retry: %s", len(chunk), exc)
                self.stats["describe:failed"] += 1
        return statuses

    async def _reconciler(self) -> None:
        interval = self._settings.poll_interval_min_seconds
        while True:
            if not self._jobs:
                self._wake_reconciler.clear()
                await self._wake_reconciler.wait()
                interval = self._settings.poll_interval_min_seconds
            try:
                await asyncio.wait_for(self._wake_reconciler.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            self._wake_reconciler.clear()
            changed = await self._reconcile_once()
            self._results.flush()
            if changed:
                interval = self._settings.poll_interval_min_seconds
            else:
                interval = min(interval * 1.5, self._settings.poll_interval_max_seconds)

    async def _reconcile_once(self) -> bool:
        now = time.monotonic()
        statuses = await self._describe(list(self._jobs))
        listing: set[str] | None = None

        async def results_present() -> set[str]:
            # One LIST of the results prefix per round serves every array: S3 calls, not Batch API calls.
            nonlocal listing
            if listing is None:
                try:
                    listing = await asyncio.to_thread(self._store.list_keys, RESULTS_PREFIX)
                except StoreError as exc:
                    logger.warning("listing results failed, will retry: %s", exc)
                    listing = set()
            return listing

        changed = False
        for job in list(self._jobs.values()):
            status = statuses.get(job.job_id)
            if status is None:
                if now - job.last_seen > self._settings.vanish_bound_seconds:
                    self._vanish(job, now)
                    changed = True
                continue
            job.last_seen = now
            if status.state is not job.state:
                logger.info("job %s: %s -> %s", job.job_id, job.state.value if job.state else "-", status.state.value)
                job.state, changed = status.state, True
            await self._watch_runnable(job, status, now)
            if None in job.tasks:
                task = self._tasks.get(job.tasks[None])
                if task is not None:
                    task.state = status.state
                if status.state.is_final:
                    self._start_resolve(job.tasks[None], status)
                    del self._jobs[job.job_id]
            else:
                changed |= await self._reconcile_array(job, status, results_present)
        await self._settle_usage()
        return changed

    async def _reconcile_array(
        self, job: _Job, parent: JobStatus, results_present: Callable[[], Awaitable[set[str]]]
    ) -> bool:
        """Resolve array children without describing each one: successes by their result objects, and only
        failures (which carry a reason and logs) by DescribeJobs of the children still unresolved."""
        summary = parent.array_summary or {}
        progressed = False
        for index, task_id in list(job.tasks.items()):
            if task_id not in self._tasks:  # cancelled meanwhile; Batch will count the child FAILED
                del job.tasks[index]
                job.failed_resolved += 1
        if summary.get(JobState.SUCCEEDED, 0) > job.ok_resolved:
            present = await results_present()
            for index, task_id in list(job.tasks.items()):
                if result_key(task_id) in present and index is not None:
                    # Tentative: a result that fails its checks may have been planted before the child ran; the
                    # child then goes back to this job, and its own final state decides.
                    child = JobStatus(job_id=f"{job.job_id}:{index}", state=JobState.SUCCEEDED)
                    self._start_resolve(task_id, child, tentative=(job, index))
                    del job.tasks[index]
                    job.ok_resolved += 1
                    progressed = True
        if job.tasks and (summary.get(JobState.FAILED, 0) > job.failed_resolved or parent.state.is_final):
            child_ids = [f"{job.job_id}:{index}" for index in job.tasks if index is not None]
            statuses = await self._describe(child_ids)
            for index, task_id in list(job.tasks.items()):
                status = statuses.get(f"{job.job_id}:{index}")
                if status is None or not status.state.is_final:
                    continue
                self._start_resolve(task_id, status)
                del job.tasks[index]
                if status.state is JobState.SUCCEEDED:
                    job.ok_resolved += 1
                else:
                    job.failed_resolved += 1
                progressed = True
        if not job.tasks:
            del self._jobs[job.job_id]
        return progressed

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

    def _vanish(self, job: _Job, now: float) -> None:
        logger.error("job %s vanished from %s for %.0fs; failing its tasks", job.job_id, self._backend.name,
                     now - job.last_seen)  # fmt: skip
        for index, task_id in job.tasks.items():
            job_id = job.job_id if index is None else f"{job.job_id}:{index}"
            error = JobVanishedError(
                f"job {job_id} is no longer reported by {self._backend.name} (not seen for "
                f"{self._settings.vanish_bound_seconds:.0f}s); its result can never arrive. Resubmit the task.",
                job_id,
            )
            self._finish(task_id, TaskOutcome(False, pickle.dumps(error)))
        del self._jobs[job.job_id]

    def _read_result(self, task: _Task, status: JobStatus) -> TaskOutcome | None:
        """Blocking: fetch and check the result object; None when there is none. Raises ResultRejectedError."""
        task_id = task.work.task_id
        key = result_key(task_id)
        try:
            data = self._store.get(key)
        except ObjectMissingError:
            return None
        envelope = decode_result(data, self._keys, expected_task_id=task_id, expected_nonce=task.nonce)
        self._forget_uploads(envelope.bad_objects)
        if self._settings.delete_results:
            self._results.discard(key)  # deleted with the next batch
        logger.info("task %s: %s from job %s attempt %d (ran %.3fs)", task_id, envelope.status, status.job_id,
                    envelope.attempt, envelope.duration_seconds)  # fmt: skip
        return TaskOutcome(envelope.status == "success", envelope.body)

    def _forget_uploads(self, keys: Sequence[str]) -> None:
        """Stored objects found tampered with or corrupt: upload them again for the next task that needs them."""
        for key in keys:
            if self._uploaded.pop(key, None) is not None:
                logger.warning("stored object %s did not match its digest; it will be uploaded again", key)

    def _start_resolve(self, task_id: str, status: JobStatus, *, tentative: tuple[_Job, int] | None = None) -> None:
        """Read the task's result in the background: concurrent with other reads and with the next round."""
        resolving = asyncio.create_task(
            self._resolve(task_id, status, tentative=tentative), name=f"resolve-{task_id[:12]}"
        )
        self._resolving.add(resolving)
        resolving.add_done_callback(self._resolved)

    def _resolved(self, resolving: asyncio.Task[None]) -> None:
        self._resolving.discard(resolving)
        if not resolving.cancelled() and resolving.exception() is not None:
            logger.error("%s crashed; its task got no result", resolving.get_name(), exc_info=resolving.exception())
        if not self._resolving:
            self._results.flush()  # the burst of reads is over: delete its results now, in as few calls as possible

    async def _resolve(self, task_id: str, status: JobStatus, *, tentative: tuple[_Job, int] | None = None) -> None:
        """Finish the task from its result or from the job's failure. With ``tentative`` (an array child seen only
        through the parent's summary), a result that fails its checks puts the child back into its job instead."""
        task = self._tasks.get(task_id)
        if task is None:
            return
        try:
            outcome = await self._results.call(self._read_result, task, status)
        except StoreError as exc:
            outcome = TaskOutcome(False, pickle.dumps(exc))
        except ResultRejectedError as exc:
            logger.warning("task %s: result of job %s refused: %s", task_id, status.job_id, exc)
            if tentative is not None:
                job, index = tentative
                job.tasks[index] = task_id
                job.ok_resolved -= 1
                self._jobs.setdefault(job.job_id, job)
                return
            outcome = TaskOutcome(False, pickle.dumps(exc))
        if outcome is None:
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
            kind = Outcome.JOB_FAILED
        else:
            kind = Outcome.SUCCESS if outcome.success else Outcome.TASK_ERROR
        self._usage.record(status.job_id, [task_id], kind, status.usage)
        self._finish(task_id, outcome)

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
