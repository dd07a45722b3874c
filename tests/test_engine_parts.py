"""The engine's parts on their own, with a fake clock and a fake JobBackend: packer timing, ledger moves, the vanish
clock paused by failed calls, resolver decisions, submitter decisions and shutdown bounds. No process, no sleep on a
wall clock: every time is the fake clock's."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import pathlib
import pickle
import threading
from collections.abc import Iterator, Sequence

import pytest

from scaler_aws_batch.backends.base import JobBackend, JobSpec, JobState, JobStatus, ListedJob, runner_overrides_length
from scaler_aws_batch.contracts import StatusReason, job_name_prefix
from scaler_aws_batch.engine import JobEngine
from scaler_aws_batch.engine.accounting import UsageAccounts
from scaler_aws_batch.engine.ledger import SCALER_RESTARTED_REASON, JobRecord, Ledger, TaskRecord
from scaler_aws_batch.engine.leftovers import LeftoverResults
from scaler_aws_batch.engine.packer import Packer
from scaler_aws_batch.engine.payload import UploadCache
from scaler_aws_batch.engine.reconciler import Reconciler
from scaler_aws_batch.engine.resolver import Finish, MoveToOnDemand, PutBack, Resolver
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.stopping import (
    STOP_BOUND_MARGIN_SECONDS,
    JobStopper,
    stop_bound_seconds,
    stop_parallelism,
)
from scaler_aws_batch.engine.submitter import Submitter
from scaler_aws_batch.engine.watch import runnable_overdue, vanish_clock
from scaler_aws_batch.engine.work import TaskOutcome, TaskWork
from scaler_aws_batch.errors import (
    BackendError,
    BackendUnavailableError,
    JobVanishedError,
    ResultMissingError,
    SpotRetriesExhaustedError,
)
from scaler_aws_batch.reattach import FoundJob, ShutdownReport, take_stock
from scaler_aws_batch.results import ResultIO
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores.local import LocalDirectoryStore
from scaler_aws_batch.usage import UsageRecorder
from scaler_aws_batch.wire import RESULTS_PREFIX, TaskBlobs, TaskResultEnvelope, result_key

SPOT_REASON = f"{StatusReason.SPOT_RECLAIM_PREFIX} (instance i-0123456789abcdef0) terminated."


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend(JobBackend):
    """Answers describes from ``statuses``; fails them while ``describe_fails`` is set; records every call."""

    def __init__(self) -> None:
        self.statuses: dict[str, JobStatus] = {}
        self.describe_fails = False
        self.cancel_fails: set[str] = set()
        self.listed: list[ListedJob] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.cancelled: list[str] = []
        self.reasons: dict[str, str] = {}
        self.submitted: list[JobSpec] = []

    @property
    def name(self) -> str:
        return "fake"

    def submit(self, spec: JobSpec) -> str:
        self.calls["submit"] += 1
        self.submitted.append(spec)
        return f"job-{len(self.submitted)}"

    def describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.calls["describe"] += 1
        if self.describe_fails:
            raise BackendUnavailableError("throttled", hint="lower the rate")
        return {job_id: self.statuses[job_id] for job_id in job_ids if job_id in self.statuses}

    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        self.calls["cancel"] += 1
        if job_id in self.cancel_fails:
            raise BackendError(f"cannot stop {job_id}")
        self.cancelled.append(job_id)
        self.reasons[job_id] = reason

    def overrides_length(self, spec: JobSpec) -> int:
        return runner_overrides_length(spec)

    def find_jobs(self, name_prefix: str, queues: Sequence[str | None]) -> list[ListedJob]:
        self.calls["find_jobs"] += 1
        return [job for job in self.listed if job.name.startswith(name_prefix)]


def _settings(**overrides: object) -> EngineSettings:
    values: dict[str, object] = {
        "adapter_id": "parts",
        "client_python": "3.11",
        "cloudpickle_version": "3.0.0",
        "array_window_seconds": 0.05,
        "array_max_wait_seconds": 2.0,
        "array_max_wait_cap_seconds": 10.0,
        "vanish_bound_seconds": 60.0,
    }
    values.update(overrides)
    return EngineSettings(**values)  # type: ignore[arg-type]


def _work(task_id: str, queue: str | None = None) -> TaskWork:
    return TaskWork(TaskBlobs(task_id=task_id, serializer=b"s", function=b"f", arguments=()), queue=queue)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop for task futures in tests that run no coroutine."""
    new = asyncio.new_event_loop()
    yield new
    new.close()


def _record(task_id: str, loop: asyncio.AbstractEventLoop) -> TaskRecord:
    future: asyncio.Future[TaskOutcome] = loop.create_future()
    return TaskRecord(work=_work(task_id), future=future)


# --- packer ---------------------------------------------------------------------------------------------------------

KEY = ("serializer", "resources")


def test_a_group_is_due_when_no_task_arrived_for_the_window() -> None:
    packer = Packer(_settings())
    packer.add(KEY, "a", 0.0)
    packer.add(KEY, "b", 0.03)
    assert packer.due_keys(0.07) == []
    assert packer.next_due() == pytest.approx(0.08)
    assert packer.due_keys(0.08) == [KEY]
    assert packer.take(KEY, 0.08, lambda task_id: True) == [["a", "b"]]
    assert packer.next_due() is None


def test_a_stream_is_cut_at_the_max_wait_which_doubles_while_it_lasts_and_halves_after_a_pause() -> None:
    settings = _settings()
    packer = Packer(settings)
    now = 0.0
    while now < 2.0:  # a task every 10 ms: the window never closes
        packer.add(KEY, f"t{now:.2f}", now)
        now += 0.01
    assert packer.due_keys(now) == [KEY]  # cut by the 2 s bound
    packer.take(KEY, now, lambda task_id: True)
    assert packer.max_wait_for(KEY) == 4.0  # still coming: gather longer next time
    packer.add(KEY, "next", now)
    packer.take(KEY, now + 0.01, lambda task_id: True)  # still coming again
    assert packer.max_wait_for(KEY) == 8.0
    packer.add(KEY, "last", now + 1)
    packer.take(KEY, now + 5, lambda task_id: True)  # a pause: halve it
    assert packer.max_wait_for(KEY) == 4.0
    packer.add(KEY, "after", now + 6)
    packer.take(KEY, now + 10, lambda task_id: True)
    assert packer.max_wait_for(KEY) == settings.array_max_wait_seconds


def test_a_full_array_is_due_at_once_and_groups_are_chunked() -> None:
    packer = Packer(_settings(max_array_size=3))
    for index in range(7):
        packer.add(KEY, f"t{index}", 0.0)
    assert packer.due_keys(0.0) == [KEY]
    chunks = packer.take(KEY, 0.0, lambda task_id: task_id != "t1")  # t1 was cancelled meanwhile
    assert chunks == [["t0", "t2", "t3"], ["t4", "t5", "t6"]]


def test_a_requeued_group_comes_due_after_its_delay() -> None:
    packer = Packer(_settings())
    packer.requeue(KEY, ["a", "b"], now=100.0, delay=3.0)
    assert packer.next_due() == pytest.approx(103.0)
    assert packer.due_keys(102.9) == []
    assert packer.due_keys(103.0) == [KEY]


# --- ledger ---------------------------------------------------------------------------------------------------------


def test_a_submission_places_its_tasks_and_names_the_children_of_cancelled_ones(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ledger = Ledger()
    for task_id in ("a", "c"):  # "b" was cancelled while the job was being submitted
        ledger.tasks[task_id] = _record(task_id, loop)
    cancelled = ledger.record_submission("job-1", ["a", "b", "c"], _work("a"), ("k",), now=5.0)
    assert cancelled == [("b", "job-1:1")]
    job = ledger.jobs["job-1"]
    assert job.tasks == {0: "a", 2: "c"} and job.is_array and job.failed_resolved == 1
    assert ledger.tasks["a"].job_id == "job-1:0" and ledger.tasks["c"].uploads == ("k",)
    assert ledger.home_of("c") == (job, 2)
    ledger.unplace(job, 2)
    assert ledger.home_of("c") is None


def test_adopted_jobs_wait_for_their_tasks_and_expire_after_the_grace(loop: asyncio.AbstractEventLoop) -> None:
    ledger = Ledger()
    found = [
        FoundJob("single", "n1", JobState.RUNNING, None, ("s",)),
        FoundJob("array", "n2", JobState.RUNNING, 3, ("x", "y", "z")),
    ]
    ledger.adopt(found, now=0.0, deadline=180.0)
    assert set(ledger.awaiting) == {"s", "x", "y", "z"}
    task = _record("y", loop)
    ledger.tasks["y"] = task
    assert ledger.attach(task) and task.job_id == "array:1"
    assert ledger.expire(179.0, delete_results=True).stop == []
    expiry = ledger.expire(180.0, delete_results=True)
    # The single job stops whole; of the array only the children nobody sent again.
    assert sorted(expiry.stop) == [("array:0", JobState.RUNNING), ("array:2", JobState.RUNNING),
                                   ("single", JobState.RUNNING)]  # fmt: skip
    assert expiry.delete == {"s", "x", "z"} and expiry.stopped_tasks == 3
    assert list(ledger.jobs) == ["array"] and ledger.jobs["array"].tasks == {1: "y"}


def test_detach_keeps_submitted_tasks_waiting_and_forgets_the_rest(loop: asyncio.AbstractEventLoop) -> None:
    ledger = Ledger()
    for task_id in ("placed", "unsubmitted"):
        ledger.tasks[task_id] = _record(task_id, loop)
    ledger.record_submission("job-1", ["placed"], _work("placed"), (), now=0.0)
    forgotten = ledger.detach_all(deadline=50.0)
    assert {task.work.task_id for task in forgotten} == {"placed", "unsubmitted"}
    assert ledger.tasks == {} and ledger.awaiting == {"placed": 50.0}
    assert ledger.awaiting_job["placed"] == ("job-1", None)


def test_a_refused_listed_result_puts_the_task_back_and_the_describe_decides(loop: asyncio.AbstractEventLoop) -> None:
    ledger = Ledger()
    ledger.tasks["a"] = _record("a", loop)
    ledger.record_submission("job-1", ["a"], _work("a"), (), now=0.0)
    job = ledger.jobs["job-1"]
    ledger.unplace(job, None)
    ledger.jobs.pop("job-1")
    job.ok_resolved += 1
    ledger.put_back("a", job, None)
    assert ledger.jobs["job-1"] is job and job.tasks == {None: "a"} and job.ok_resolved == 0
    assert None in job.refused and not ledger.has_listable() and ledger.home_of("a") is None


# --- vanish clock and RUNNABLE watch --------------------------------------------------------------------------------


def test_the_vanish_clock_counts_answered_rounds_only() -> None:
    job = JobRecord("j", {None: "t"}, checked_at=0.0)
    assert not vanish_clock(job, answered=False, reported=False, now=500.0, bound_seconds=60.0)  # an outage
    assert job.missing_seconds == 0.0
    assert not vanish_clock(job, answered=True, reported=False, now=530.0, bound_seconds=60.0)
    assert not vanish_clock(job, answered=True, reported=True, now=560.0, bound_seconds=60.0)  # seen: reset
    assert not vanish_clock(job, answered=True, reported=False, now=600.0, bound_seconds=60.0)
    assert vanish_clock(job, answered=True, reported=False, now=621.0, bound_seconds=60.0)


def test_a_runnable_job_is_explained_once_after_the_bound() -> None:
    job = JobRecord("j", {None: "t"}, checked_at=0.0)
    runnable = JobStatus(job_id="j", state=JobState.RUNNABLE)
    assert not runnable_overdue(job, runnable, 0.0, 300.0)
    assert not runnable_overdue(job, runnable, 300.0, 300.0)
    assert runnable_overdue(job, runnable, 301.0, 300.0)
    assert not runnable_overdue(job, runnable, 900.0, 300.0)  # once
    started = JobStatus(job_id="j", state=JobState.PENDING, array_summary={JobState.RUNNABLE: 3, JobState.RUNNING: 1})
    assert not runnable_overdue(job, started, 901.0, 300.0) and job.runnable_since is None


# --- reconciler with a fake backend ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LocalDirectoryStore:
    return LocalDirectoryStore(tmp_path / "store")


def _parts(
    backend: FakeBackend, store: LocalDirectoryStore, clock: FakeClock, **overrides: object
) -> tuple[Ledger, Resolver, Reconciler, Packer, UsageAccounts]:
    settings = _settings(**overrides)
    ledger = Ledger()
    accounts = UsageAccounts(UsageRecorder(None))
    results = ResultIO(store)
    uploads = UploadCache(settings.reupload_after_seconds)
    resolver = Resolver(backend=backend, store=store, results=results, settings=settings, keys=KeyRing((b"k" * 64,)),
                        ledger=ledger, accounts=accounts, uploads=uploads, clock=clock)  # fmt: skip
    packer = Packer(settings)
    reconciler = Reconciler(backend=backend, store=store, results=results, settings=settings, ledger=ledger,
                            accounts=accounts, resolver=resolver, stopper=JobStopper(backend, clock), packer=packer,
                            clock=clock)  # fmt: skip
    return ledger, resolver, reconciler, packer, accounts


def test_failed_describe_calls_pause_the_vanish_clock(store: LocalDirectoryStore) -> None:
    async def scenario() -> None:
        backend, clock = FakeBackend(), FakeClock()
        ledger, _, reconciler, _, _ = _parts(backend, store, clock)
        task = ledger.tasks["t"] = TaskRecord(_work("t"), asyncio.get_running_loop().create_future())
        ledger.record_submission("job-1", ["t"], task.work, (), now=clock())
        backend.describe_fails = True  # a ten-minute outage: the job is unseen, not gone
        for _ in range(10):
            clock.advance(60)
            await reconciler.describe_round(clock())
        assert "job-1" in ledger.jobs and not task.future.done()
        assert ledger.stats["describe:failed"] == 10
        backend.describe_fails = False  # answered without the job: now the clock runs
        clock.advance(40)
        await reconciler.describe_round(clock())
        assert "job-1" in ledger.jobs
        clock.advance(40)
        assert await reconciler.describe_round(clock())
        assert "job-1" not in ledger.jobs and backend.cancelled == ["job-1"]
        outcome = task.future.result()
        assert not outcome.success and isinstance(pickle.loads(outcome.body), JobVanishedError)

    asyncio.run(scenario())


def test_a_spot_reclaimed_task_is_moved_to_on_demand_then_fails_there(store: LocalDirectoryStore) -> None:
    async def scenario() -> None:
        backend, clock = FakeBackend(), FakeClock()
        ledger, resolver, _, _, _ = _parts(
            backend, store, clock, on_demand_queue="od", spot_reclaims_before_on_demand=2
        )
        task = ledger.tasks["t"] = TaskRecord(_work("t", queue="spot"), asyncio.get_running_loop().create_future())
        reclaimed = JobStatus("job-1", JobState.FAILED, status_reason=SPOT_REASON, spot_reclaims=1, attempts=1)
        first = await resolver.resolve("t", reclaimed)  # one reclaim: not yet
        assert isinstance(first, Finish) and isinstance(pickle.loads(first.outcome.body), SpotRetriesExhaustedError)
        ledger.tasks["t"] = task
        second = await resolver.resolve("t", reclaimed)  # two reclaims: the next attempt goes On-Demand
        assert isinstance(second, MoveToOnDemand) and second.work.queue == "od" and task.job_id is None
        third = await resolver.resolve("t", dataclasses.replace(reclaimed, job_id="job-2"))
        assert isinstance(third, Finish)  # already on the On-Demand queue: it fails there

    asyncio.run(scenario())


def test_resolver_decisions_for_a_missing_result(store: LocalDirectoryStore) -> None:
    async def scenario() -> None:
        backend, clock = FakeBackend(), FakeClock()
        ledger, resolver, _, _, _ = _parts(backend, store, clock)
        ledger.tasks["t"] = TaskRecord(_work("t"), asyncio.get_running_loop().create_future())
        job = JobRecord("job-1", {}, checked_at=0.0)
        listed = JobStatus("job-1", JobState.SUCCEEDED)
        put_back = await resolver.resolve("t", listed, tentative=(job, None))  # listed, then gone: the job decides
        assert put_back == PutBack(job, None)
        missing = await resolver.resolve("t", listed)  # described SUCCEEDED without a result
        assert isinstance(missing, Finish) and isinstance(pickle.loads(missing.outcome.body), ResultMissingError)
        del ledger.tasks["t"]
        assert await resolver.resolve("t", listed) is None  # nobody waits for it any more

    asyncio.run(scenario())


# --- submitter ------------------------------------------------------------------------------------------------------


def test_transient_failures_retry_until_the_deadline_then_fail(
    store: LocalDirectoryStore, loop: asyncio.AbstractEventLoop
) -> None:
    backend, clock = FakeBackend(), FakeClock()
    settings = _settings(submit_deadline_seconds=600.0)
    submitter = Submitter(backend, store, settings, KeyRing((b"k" * 64,)), UploadCache(3600), clock)
    early, late = _record("early", loop), _record("late", loop)
    early.submit_deadline, late.submit_deadline = 1600.0, 999.0
    error = BackendUnavailableError("HTTP 503", hint="AWS's side", maybe_applied=True)
    decision = submitter.transient_decision({"early": early, "late": late}, error, now=1000.0, attempt=1,
                                            jitter=lambda: 1.0)  # fmt: skip
    assert decision.retry == ["early"] and list(decision.failed) == ["late"]
    assert "AWS's side" in str(decision.failed["late"]) and decision.delay == 1.0
    assert early.maybe_submitted and late.maybe_submitted
    capped = submitter.transient_decision({"early": early}, error, now=1000.0, attempt=50, jitter=lambda: 0.0)
    assert capped.delay == 15.0  # at most 30 s, jittered down to half


def test_after_an_ambiguous_failure_the_earlier_submission_is_taken(store: LocalDirectoryStore) -> None:
    backend, clock = FakeBackend(), FakeClock()
    submitter = Submitter(backend, store, _settings(), KeyRing((b"k" * 64,)), UploadCache(3600), clock)
    works = [_work("a"), _work("b")]
    name = submitter.spec_for(works).name
    backend.listed = [ListedJob("job-earlier", name, JobState.RUNNABLE, 2)]
    submitted = submitter.prepare_and_submit(works, "nonce", maybe_submitted=True)
    assert submitted.job_id == "job-earlier" and backend.calls["submit"] == 0
    fresh = submitter.prepare_and_submit(works, "nonce", maybe_submitted=False)
    assert fresh.job_id == "job-1" and backend.calls["submit"] == 1 and fresh.transport == "inline"


class CountingStore(LocalDirectoryStore):
    """A real local store that counts its puts."""

    def __init__(self, root: pathlib.Path) -> None:
        super().__init__(root)
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        super().put(key, data)


def test_uploads_are_cached_and_refreshed_after_a_while(tmp_path: pathlib.Path) -> None:
    store = CountingStore(tmp_path / "store")
    uploads = UploadCache(reupload_after_seconds=100.0)
    uploads.upload(store, {"objects/a": b"1"}, now=0.0)
    uploads.upload(store, {"objects/a": b"1"}, now=50.0)  # uploaded lately: not again
    assert store.puts == 1
    uploads.upload(store, {"objects/a": b"1"}, now=151.0)  # the bucket may have expired it by now
    assert store.puts == 2 and store.get("objects/a") == b"1"
    uploads.forget(["objects/a"])  # found corrupt: the next task uploads it again
    uploads.upload(store, {"objects/a": b"1"}, now=152.0)
    assert store.puts == 3


# --- stopping -------------------------------------------------------------------------------------------------------


def test_shutdown_stops_within_its_bound_and_reports_what_it_could_not_stop() -> None:
    async def scenario() -> ShutdownReport:
        backend, clock = FakeBackend(), FakeClock()
        backend.cancel_fails = {"j2"}
        report = ShutdownReport()
        jobs = {f"j{index}": JobState.RUNNING for index in range(4)}
        await JobStopper(backend, clock).stop_all(jobs, deadline=clock() + 10, parallel=2, report=report)
        assert sorted(report.stopped) == ["j0", "j1", "j3"] and report.failed == ["j2"]
        late = ShutdownReport()
        await JobStopper(backend, clock).stop_all(jobs, deadline=clock() - 1, parallel=2, report=late)
        assert backend.calls["cancel"] == 4  # past the deadline: nothing more is asked of the backend
        return late

    late = asyncio.run(scenario())
    assert sorted(late.failed) == ["j0", "j1", "j2", "j3"] and late.stopped == []


class PacedBackend(FakeBackend):
    """Stops at most ``stop_jobs_per_second`` jobs per second of the fake clock: each stop takes its share of a
    second (the budget), however many calls are in flight."""

    stop_jobs_per_second = 10.0

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self._lock = threading.Lock()

    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        with self._lock:
            self.clock.advance(1.0 / self.stop_jobs_per_second)
            super().cancel(job_id, state, reason)


def test_a_thousand_single_jobs_stop_at_the_budget_within_the_bound_arrays_first() -> None:
    singles = {f"single-{index}": JobState.RUNNING for index in range(1000)}
    jobs = {**singles, "array-a": JobState.RUNNABLE, "array-b": JobState.RUNNING}
    arrays = {"array-a", "array-b"}
    rate = PacedBackend.stop_jobs_per_second
    bound = stop_bound_seconds(len(jobs), rate)
    assert bound == 101 + STOP_BOUND_MARGIN_SECONDS  # 1,002 jobs at 10 per second
    parallel = stop_parallelism(len(jobs), rate)
    assert parallel == 20  # enough calls in flight that a 2 s call latency never slows the pace

    async def stop(deadline_after: float) -> tuple[ShutdownReport, PacedBackend]:
        clock = FakeClock()
        backend = PacedBackend(clock)
        report = ShutdownReport()
        await JobStopper(backend, clock).stop_all(jobs, clock() + deadline_after, parallel, report, arrays)
        return report, backend

    report, backend = asyncio.run(stop(bound))
    assert len(report.stopped) == len(jobs) and report.failed == []
    assert set(backend.cancelled[:2]) == arrays  # one call stops a whole array: those go first

    # Cut short (60 s for 1,002 jobs): what is left is reported, each job exactly once, never silently dropped.
    short, backend = asyncio.run(stop(60.0))
    assert 600 <= len(short.stopped) <= 600 + parallel
    assert sorted(short.stopped + short.failed) == sorted(jobs)
    assert arrays <= set(short.stopped)
    assert backend.calls["cancel"] == len(short.stopped)  # past the deadline nothing more is asked of the backend


def test_the_facade_logs_the_bound_and_hands_over_what_it_could_not_stop(
    store: LocalDirectoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> ShutdownReport:
        backend = FakeBackend()
        backend.cancel_fails = {"j2"}
        engine = JobEngine(backend, store, _settings(), KeyRing((b"k" * 64,)), clock=FakeClock())
        engine.adopt([FoundJob("j1", "n1", JobState.RUNNING, None, ("a",)),
                      FoundJob("j2", "n2", JobState.RUNNABLE, 2, ("b", "c"))])  # fmt: skip
        return await engine.shutdown(stop_jobs=True, timeout_seconds=30)

    with caplog.at_level(logging.INFO, logger="scaler_aws_batch.engine.stopping"):
        report = asyncio.run(scenario())
    assert report.stopped == ["j1"] and report.failed == ["j2"]
    bound = stop_bound_seconds(2, FakeBackend.stop_jobs_per_second)
    assert f"stopping 2 job(s) (1 array(s), 1 single), expected within {bound:.0f} s" in caplog.text
    adapter_id = _settings().adapter_id
    assert f"1 job(s) left running, handed over: the next adapter with --adapter-id {adapter_id}" in caplog.text
    assert job_name_prefix(adapter_id) in caplog.text


def test_the_facade_keeps_or_stops_adopted_jobs_at_shutdown(store: LocalDirectoryStore) -> None:
    async def scenario(stop_jobs: bool) -> tuple[ShutdownReport, FakeBackend]:
        backend = FakeBackend()
        engine = JobEngine(backend, store, _settings(), KeyRing((b"k" * 64,)), clock=FakeClock())
        engine.adopt([FoundJob("j1", "n1", JobState.RUNNING, None, ("a",)),
                      FoundJob("j2", "n2", JobState.RUNNABLE, 2, ("b", "c"))])  # fmt: skip
        return await engine.shutdown(stop_jobs=stop_jobs, timeout_seconds=30), backend

    kept, backend = asyncio.run(scenario(stop_jobs=False))
    assert kept.kept == ["j1", "j2"] and backend.calls["cancel"] == 0
    stopped, backend = asyncio.run(scenario(stop_jobs=True))
    assert sorted(stopped.stopped) == ["j1", "j2"] and stopped.failed == [] and stopped.kept == []


def test_an_adopted_array_child_whose_task_is_not_sent_again_is_stopped_after_the_grace(
    store: LocalDirectoryStore,
) -> None:
    async def scenario() -> tuple[FakeBackend, Ledger, TaskRecord]:
        backend, clock = FakeBackend(), FakeClock()
        ledger, _, reconciler, _, _ = _parts(backend, store, clock, reattach_grace_seconds=180.0)
        found = FoundJob("array", "n", JobState.RUNNING, 2, ("sent-again", "never-sent"))
        ledger.adopt([found], clock(), clock() + 180)
        task = ledger.tasks["sent-again"] = TaskRecord(_work("sent-again"), asyncio.get_running_loop().create_future())
        assert ledger.attach(task)
        clock.advance(179.0)
        await reconciler.expire_awaiting(clock())
        assert backend.cancelled == []
        clock.advance(1.0)
        await reconciler.expire_awaiting(clock())
        return backend, ledger, task

    backend, ledger, task = asyncio.run(scenario())
    assert backend.cancelled == ["array:1"]  # only the child whose task was not sent again
    assert ledger.stats["grace-stopped"] == 1 and ledger.jobs["array"].tasks == {0: "sent-again"}
    assert not task.future.done()


def test_results_an_earlier_run_left_are_deleted_after_the_grace_only_when_its_own_jobs_wrote_them(
    store: LocalDirectoryStore, loop: asyncio.AbstractEventLoop
) -> None:
    """A result handed over just before a kill -9 stays stored; the next adapter keeps it for the re-send, then
    deletes it after the grace, but only when a job of its own adapter id wrote it (the prefix may be shared)."""
    keys = KeyRing((b"k" * 64,))
    backend = FakeBackend()
    backend.listed = [ListedJob("old", "scaler-parts-a-x2", JobState.SUCCEEDED, 2)]  # ended: found by name all the same
    written_by = {"handed-over": "old:0", "sent-again": "old:1", "other-adapter": "foreign"}
    for task_id, job_id in written_by.items():
        envelope = TaskResultEnvelope(task_id=task_id, status="success", body=b"r", nonce="n", job_id=job_id)
        store.put(result_key(task_id), envelope.encode(keys))
    store.put(result_key("forged"), b"not a result")
    stock = take_stock(backend, store, "scaler-parts-", [None], keys)
    assert stock.own_job_ids == {"old"} and stock.live_jobs == ()
    assert stock.stored_results == {"handed-over", "sent-again", "other-adapter", "forged"}

    async def scenario() -> tuple[int, int]:
        ledger, results = Ledger(), ResultIO(store)
        leftovers = LeftoverResults(store, keys, results, ledger)
        ledger.stored.update(dict.fromkeys(stock.stored_results, math.inf))
        leftovers.note(stock.stored_results, stock.own_job_ids, deadline=1180.0)
        del ledger.stored["sent-again"]  # its task came again and took its result (deleted on that path)
        early = await leftovers.sweep(1179.0)
        swept = await leftovers.sweep(1180.0)
        await asyncio.to_thread(results.close)
        return early, swept

    early, swept = loop.run_until_complete(scenario())
    assert (early, swept) == (0, 1)
    assert store.list_keys(RESULTS_PREFIX) == {result_key(t) for t in ("sent-again", "other-adapter", "forged")}


def test_a_scheduler_restart_cuts_the_grace_and_names_the_restart_as_the_stop_reason(
    store: LocalDirectoryStore,
) -> None:
    """Jobs kept for a restarted scheduler's tasks wait only the restart grace; a task sent again meanwhile (the same
    scheduler after all) still re-attaches; a job kept for another reason keeps its own grace."""

    async def scenario() -> tuple[FakeBackend, Ledger, int]:
        backend, clock = FakeBackend(), FakeClock()
        ledger, _, reconciler, _, _ = _parts(backend, store, clock, reattach_grace_seconds=180.0)
        found = FoundJob("array", "n", JobState.RUNNING, 3, ("a", "b", "sent-again"))
        ledger.adopt([found], clock(), clock() + 180)
        cut = ledger.cut_grace(clock() + 5.0)
        ledger.adopt([FoundJob("later", "n2", JobState.RUNNABLE, None, ("l",))], clock(), clock() + 180)
        task = ledger.tasks["sent-again"] = TaskRecord(_work("sent-again"), asyncio.get_running_loop().create_future())
        assert ledger.attach(task)
        clock.advance(4.0)
        await reconciler.expire_awaiting(clock())
        assert backend.cancelled == []
        clock.advance(1.0)
        await reconciler.expire_awaiting(clock())
        return backend, ledger, cut

    backend, ledger, cut = asyncio.run(scenario())
    assert cut == 3 and sorted(backend.cancelled) == ["array:0", "array:1"]
    assert {backend.reasons[job] for job in backend.cancelled} == {SCALER_RESTARTED_REASON}
    assert set(ledger.awaiting) == {"l"} and not ledger.orphaned_by_restart
