"""Fault suite: the adapter (its own process, aws-batch backend) against the Batch emulator over HTTP, with a real
Scaler scheduler and client, under the faults an operator meets on a bad day.

Every case counts, per task: **lost** (the client never got a result or an error), **run twice** (the task's
function executed more than once: each execution leaves a marker file), **duplicate results** (the client received
more than one result for a task, counted where Scaler's client takes its TaskResult messages in; or one adapter handed
a result over twice, from its log), **re-delivered** (a later adapter handed over a result that a killed adapter had
logged as handed over but the scheduler never got: not a duplicate, the scheduler sent the task again because it had
no result), **orphans** (jobs left SUBMITTED..RUNNING once the last
adapter has shut down: nobody tracks them), and the error texts the client saw. With
``SCALER_BATCH_RELIABILITY_RECORD=<file>`` each case appends its row there as one JSON line (docs/reliability.md).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest
from scaler import Client
from scaler.client.agent.task_manager import ClientTaskManager
from scaler.protocol.capnp import TaskResult

from batch_emulator import BatchEmulator, EmulatorConfig
from conftest import WAIT_SECONDS, AdapterProcess, wait_for
from harness import BUCKET, PREFIX, SPOT_RETRY_STRATEGY, TIME_SCALE, create_signing_secret
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, job_name_prefix
from scaler_aws_batch.embedded import EmbeddedScheduler
from slurm_cluster import SlurmCluster

# Each test starts its own trials on the module's emulator: the tests spread over parallel workers.
pytestmark = [pytest.mark.e2e, pytest.mark.spread]

#: The adapter's own credentials: distinct from the jobs', so a fault can expire only the adapter's.
ADAPTER_ENV = {"AWS_ACCESS_KEY_ID": "adapter", "AWS_SECRET_ACCESS_KEY": "adapter", "AWS_DEFAULT_REGION": "us-east-1"}
#: Scaler re-sends a dead worker's tasks after its worker timeout (60 s by default); shortened so trials stay quick,
#: but not below what a live adapter (heartbeat every second) can miss on a loaded machine: at 5 s, two test runs at
#: once had live adapters declared dead, their tasks run twice and their results refused.
WORKER_TIMEOUT_SECONDS = 15
LIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
_DELIVERED = re.compile(r"task ([0-9a-f]+): (?:success|failure) after")
_STOPPED_AT_SHUTDOWN = re.compile(r"shutdown: stopped \d+ job\(s\): ([^;\n]+)")


def _make_work() -> Callable[[str, int, float], int]:
    def work(marks: str, key: int, seconds: float, ballast: bytes = b"", gate: str = "") -> int:
        """The task: leaves one marker file per execution, then works for a while (and, with ``gate``, until that
        file exists). ``ballast`` only makes the payload bigger."""
        import pathlib as _pathlib
        import time as _time
        import uuid as _uuid

        (_pathlib.Path(marks) / f"{key}-{_uuid.uuid4().hex}").touch()
        _time.sleep(seconds)
        while gate and not _pathlib.Path(gate).exists():
            _time.sleep(0.05)
        return key * 2

    return work


#: A nested function travels by value (cloudpickle), so the job need not import this test module.
work = _make_work()


@dataclasses.dataclass
class Row:
    case: str
    trials: int = 0
    tasks: int = 0
    lost: int = 0
    run_twice: int = 0
    duplicate_results: int = 0
    redelivered: int = 0
    orphans: int = 0
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def record(self) -> None:
        line = {**dataclasses.asdict(self), "errors": dict(self.errors)}
        print(f"\nreliability: {json.dumps(line)}")
        target = os.environ.get("SCALER_BATCH_RELIABILITY_RECORD")
        if target:
            with open(target, "a") as handle:
                handle.write(json.dumps(line) + "\n")

    def assert_clean(self, *, run_twice_allowed: bool = False, errors_allowed: bool = False) -> None:
        assert (self.lost, self.duplicate_results, self.orphans) == (0, 0, 0), self
        if not run_twice_allowed:
            assert self.run_twice == 0, self
        if not errors_allowed:
            assert not self.errors, self


class World:
    """One emulator for the module; a scheduler, adapters and a client per trial."""

    def __init__(self, emulator: BatchEmulator, root: pathlib.Path) -> None:
        self.emulator = emulator
        self.root = root
        self.signing_secret, _ = create_signing_secret(emulator)
        self.queue, self.job_definition = emulator.create_queue_and_job_definition(
            retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600,
            environment={SIGNING_SECRET_ENV: self.signing_secret},
        )  # fmt: skip
        emulator.client("s3").create_bucket(Bucket=BUCKET)

    def adapter_args(self, adapter_id: str | None, extra: Sequence[str] = ()) -> list[str]:
        """``adapter_id`` None: the default id (no ``--adapter-id``)."""
        return [
            "--backend", "aws-batch", "--job-queue", self.queue, "--job-definition", self.job_definition,
            "--bucket", BUCKET, "--prefix", PREFIX, "--region", self.emulator.region,
            "--endpoint-url", self.emulator.endpoint_url, *(["--adapter-id", adapter_id] if adapter_id else []),
            "--reattach-grace", "30",
            "--shutdown-timeout", "60", "--signing-secret", self.signing_secret, *extra,
        ]  # fmt: skip

    def live_jobs(self, adapter_id: str) -> list[str]:
        """Job ids (array children included) of this adapter that are not finished, as AWS reports them."""
        # The census must not fail on the very fault under test (50% throttling): enough retries to see through it.
        batch = self.emulator.client("batch", max_attempts=_CENSUS_ATTEMPTS)
        name_filter = [{"name": "JOB_NAME", "values": [f"{job_name_prefix(adapter_id)}*"]}]
        live: list[str] = []
        for page in batch.get_paginator("list_jobs").paginate(jobQueue=self.queue, filters=name_filter):  # type: ignore[arg-type]
            live.extend(job["jobId"] for job in page["jobSummaryList"] if job["status"] in LIVE_STATES)
        return live

    def running_count(self, adapter_id: str) -> int:
        batch = self.emulator.client("batch", max_attempts=_CENSUS_ATTEMPTS)
        ids = self.live_jobs(adapter_id)
        jobs = batch.describe_jobs(jobs=ids[:100])["jobs"] if ids else []
        summaries = [job.get("arrayProperties", {}).get("statusSummary", {}) for job in jobs]
        return sum(job["status"] == "RUNNING" for job in jobs) + sum(item.get("RUNNING", 0) for item in summaries)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with BatchEmulator(EmulatorConfig(time_scale=TIME_SCALE, max_running_jobs=8)) as emulator:
        yield World(emulator, tmp_path_factory.mktemp("faults"))


class Trial:
    """One scheduler, the adapters started during the trial, one client, and the tasks' marker files."""

    def __init__(self, world: World, name: str, adapter_id: str) -> None:
        self.world = world
        self.dir = world.root / f"{name}-{uuid.uuid4().hex[:6]}"
        self.marks = self.dir / "marks"
        self.marks.mkdir(parents=True)
        self.adapter_id = adapter_id
        self.adapters: list[AdapterProcess] = []
        self.cluster = EmbeddedScheduler(log_path=str(self.dir / "scheduler.log"),
                                         worker_timeout_seconds=WORKER_TIMEOUT_SECONDS)  # fmt: skip
        self.futures: list[Future[Any]] = []
        self.exit_codes: list[int | None] = []

    def start_adapter(
        self,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        *,
        args: Sequence[str] | None = None,
        default_id: bool = False,
    ) -> AdapterProcess:
        """An adapter on the emulator with ``extra`` flags, or with ``args`` instead (another backend);
        ``default_id``: without ``--adapter-id``."""
        if args is None:
            args = self.world.adapter_args(None if default_id else self.adapter_id, extra)
        work_dir = self.dir / f"adapter-{len(self.adapters)}"
        adapter = AdapterProcess(self.cluster.addresses.scheduler, work_dir, args, {**ADAPTER_ENV, **(env or {})})
        self.adapters.append(adapter)
        return adapter

    def submit(self, client: Client, count: int, seconds: float, ballast: int = 0, gate: str = "") -> None:
        """``ballast``: random bytes per task, so that an array's payload is too big to travel inline; ``gate``: a
        file the tasks wait for."""
        self.futures += [
            client.submit(work, str(self.marks), key, seconds, os.urandom(ballast), gate) for key in range(count)
        ]

    def executions(self) -> collections.Counter[str]:
        return collections.Counter(path.name.split("-")[0] for path in self.marks.iterdir())

    def done(self) -> int:
        return sum(future.done() for future in self.futures)

    def settle(self, row: Row, *, expect: Callable[[int], object] = lambda key: key * 2) -> None:
        """Wait for every future, stop the adapters with SIGTERM, then count into ``row``."""
        deadline = time.monotonic() + WAIT_SECONDS
        for key, future in enumerate(self.futures):
            try:
                value = future.result(timeout=max(0.1, deadline - time.monotonic()))
                assert value == expect(key)
            except TimeoutError:
                row.lost += 1
            except Exception as exc:  # noqa: BLE001 - the error the user saw is what this row records
                row.errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"] += 1
        for adapter in self.adapters:
            if adapter.process.poll() is None:
                adapter.stop()
            self.exit_codes.append(adapter.process.returncode)
        row.trials += 1
        row.tasks += len(self.futures)
        row.run_twice += sum(count > 1 for count in self.executions().values())
        received = [RECEIVED[future.task_id.hex()] for future in self.futures]  # type: ignore[attr-defined]
        handed_over = [
            collections.Counter(match.group(1) for match in _DELIVERED.finditer(adapter.log_text()))
            for adapter in self.adapters
        ]
        twice_by_one = {task for counts in handed_over for task, count in counts.items() if count > 1}
        row.duplicate_results += sum(count > 1 for count in received) + len(twice_by_one)
        by_adapters = collections.Counter(task for counts in handed_over for task in counts)
        row.redelivered += sum(count > 1 for count in by_adapters.values())
        # Right after the last adapter left: a job still live that no adapter stopped is tracked by nobody. (Jobs
        # being stopped may still show RUNNING for the emulator's kill grace.)
        stopped = {
            job_id.strip()
            for adapter in self.adapters
            for match in _STOPPED_AT_SHUTDOWN.finditer(adapter.log_text())
            for job_id in match.group(1).split(",")
        }
        row.orphans += len(set(self.world.live_jobs(self.adapter_id)) - stopped)


#: TaskResult messages the client received, by task id (hex): every Client of this process counts here.
RECEIVED: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True, scope="module")
def count_results_received() -> Iterator[None]:
    """Count each TaskResult where Scaler's client takes it in (before it drops one for a task already done), so a
    duplicate result is one the user's process actually received, not one an adapter believed it sent."""
    original = ClientTaskManager.on_task_result

    async def counting(self: ClientTaskManager, result: TaskResult) -> None:
        RECEIVED[result.taskId.hex()] += 1
        await original(self, result)

    ClientTaskManager.on_task_result = counting  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClientTaskManager.on_task_result = original  # type: ignore[method-assign]


#: botocore attempts for the test's own ListJobs/DescribeJobs census (each fails with p=0.5 at most here).
_CENSUS_ATTEMPTS = 30


@contextlib.contextmanager
def trial(world: World, name: str, adapter_id: str | None = None) -> Iterator[Trial]:
    run = Trial(world, name, adapter_id or f"{name}-{uuid.uuid4().hex[:6]}")
    with run.cluster:
        try:
            yield run
        finally:
            for adapter in run.adapters:
                adapter.stop()


# --- kill -9 of the adapter at four points, then a restart with the same adapter id ----------------------------------

KILL_POINTS: dict[str, tuple[int, Callable[[Trial], bool]]] = {
    # trials per point, and when to kill
    "tasks queued": (2, lambda run: True),
    "first job just submitted": (3, lambda run: run.world.emulator.api_calls["SubmitJob"] >= 1),
    "some RUNNING, the rest RUNNABLE": (3, lambda run: run.world.running_count(run.adapter_id) >= 1),
    "half done": (2, lambda run: run.done() >= len(run.futures) // 2),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_restart_reattaches_without_running_anything_twice(world: World, point: str) -> None:
    trials, ready = KILL_POINTS[point]
    row = Row(f"kill -9 of the adapter: {point}, restart with the same id")
    for number in range(trials):
        with trial(world, f"kill{number}") as run:
            first = run.start_adapter(["--array-window", "2"] if point == "tasks queued" else [])
            with Client(address=run.cluster.addresses.scheduler) as client:
                world.emulator.reset_api_calls()
                run.submit(client, 8, seconds=1.0)
                wait_for(lambda: ready(run), f"the kill point {point!r}", interval=0.01)
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
                run.start_adapter()
                run.settle(row)
    row.record()
    row.assert_clean()


def test_kill_9_while_an_indexed_array_runs_then_restart_reattaches(world: World) -> None:
    """An array whose payload is stored in the indexed format, killed while it is live: the restarted adapter reads
    its task table from the signed sections. The tasks wait for a gate file until then, so the job is still live."""
    row = Row("kill -9 of the adapter: an array with a stored (indexed) payload live, restart with the same id")
    with trial(world, "killindexed") as run:
        gate = run.dir / "gate"
        first = run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            world.emulator.reset_api_calls()
            run.submit(client, 8, seconds=0.0, ballast=1024, gate=str(gate))  # 8 KiB of random bytes: not inline
            wait_for(lambda: "payload indexed" in first.log_text(), "the indexed array's submission", interval=0.01)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            second = run.start_adapter()
            wait_for(lambda: "took stock" in second.log_text(), "the restarted adapter's stock", interval=0.05)
            assert "1 live job(s) with 8 task(s)" in second.log_text()
            gate.touch()
            run.settle(row)
            assert "cannot read its task table" not in second.log_text()
    row.record()
    row.assert_clean()


# --- shutdown ------------------------------------------------------------------------------------------------------


def test_sigterm_during_submission_stops_every_job_and_a_new_adapter_finishes_the_tasks(world: World) -> None:
    row = Row("SIGTERM while jobs are being submitted (jobs stopped), then a new adapter")
    with trial(world, "sigterm") as run:
        first = run.start_adapter(["--array-window", "0.05"])  # many small jobs: submissions are in flight
        with Client(address=run.cluster.addresses.scheduler) as client:
            world.emulator.reset_api_calls()
            run.submit(client, 20, seconds=1.0)
            wait_for(lambda: world.emulator.api_calls["SubmitJob"] >= 1, "the first SubmitJob", interval=0.01)
            first.stop()
            assert first.process.returncode == 0, "every job was stopped, so the adapter exits 0"
            log = first.log_text()
            assert "shutdown: stopped" in log and "could NOT stop" not in log
            assert not world.live_jobs(run.adapter_id) or set(world.live_jobs(run.adapter_id)) <= {
                job_id.strip() for match in _STOPPED_AT_SHUTDOWN.finditer(log) for job_id in match.group(1).split(",")
            }
            run.start_adapter()
            run.settle(row)
    row.record()
    # Tasks whose job was stopped mid-run run again on the next adapter: that is what stopping means.
    row.assert_clean(run_twice_allowed=True)


def test_rolling_restart_keeps_jobs_running_and_reattaches(world: World) -> None:
    row = Row("SIGTERM with --keep-jobs-on-exit (rolling restart), restart with the same id")
    with trial(world, "rolling") as run:
        first = run.start_adapter(["--keep-jobs-on-exit"])
        with Client(address=run.cluster.addresses.scheduler) as client:
            world.emulator.reset_api_calls()
            run.submit(client, 8, seconds=1.0)
            wait_for(lambda: world.running_count(run.adapter_id) >= 1, "a RUNNING job", interval=0.01)
            first.stop()
            assert first.process.returncode == 0 and "left" in first.log_text()
            run.start_adapter()
            run.settle(row)
    row.record()
    row.assert_clean()


def test_scheduler_restart_the_adapter_reconnects_and_serves_again(world: World) -> None:
    row = Row("scheduler restart: the adapter reconnects, keeps its jobs, resumes")
    with trial(world, "schedrestart") as run:
        adapter = run.start_adapter(["--reattach-grace", "5"])
        with Client(address=run.cluster.addresses.scheduler) as client:
            assert client.submit(abs, -1).result(timeout=WAIT_SECONDS) == 1
        run.cluster.restart_scheduler()
        wait_for(lambda: "reconnecting" in adapter.log_text(), "the adapter to notice the restart")
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 8, seconds=0.5)
            run.settle(row)
        assert adapter.process.returncode == 0
    row.record()
    row.assert_clean()


# --- AWS faults --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _faults(world: World, **settings: Any) -> Iterator[None]:
    faults = world.emulator.faults
    saved = {name: getattr(faults, name) for name in settings}
    for name, value in settings.items():
        setattr(faults, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(faults, name, value)


def test_half_the_batch_calls_throttled(world: World) -> None:
    row = Row("50% of Batch calls throttled (429)")
    with trial(world, "throttle") as run, _faults(world, throttle_rate=0.5):
        run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 30, seconds=0.2)
            run.settle(row)
    row.record()
    row.assert_clean()


def test_bursts_of_server_errors(world: World) -> None:
    row = Row("three 4 s bursts of HTTP 500 on every Batch call")
    with trial(world, "5xx") as run:
        run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 30, seconds=0.2)
            for _ in range(3):
                world.emulator.faults.burst_server_errors(4)
                time.sleep(5)  # a 4 s burst, then 1 s of service: the bursts' rhythm is the fault, not an assertion
            run.settle(row)
    row.record()
    row.assert_clean()


def test_spot_reclaim_on_every_first_attempt(world: World) -> None:
    row = Row("Spot reclaim on every first attempt (Batch retries)")
    with trial(world, "spot") as run, _faults(world, spot_reclaim_attempts={1}, spot_reclaim_after_seconds=0.3):
        run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 8, seconds=1.0)
            run.settle(row)
    row.record()
    # A reclaimed attempt had started the function: Batch's retry runs it again (at-least-once).
    row.assert_clean(run_twice_allowed=True)


def test_vanished_jobs_fail_clearly_and_are_stopped(world: World) -> None:
    row = Row("jobs vanish from DescribeJobs (--vanish-after 3)")
    with trial(world, "vanish") as run:
        with _faults(world, vanish_job_name_glob=f"{job_name_prefix(run.adapter_id)}*"):
            adapter = run.start_adapter(["--vanish-after", "3"])
            with Client(address=run.cluster.addresses.scheduler) as client:
                # Jobs that run on without writing a result: one that writes it is simply delivered (results are
                # found by listing the store, not by describing the job).
                run.submit(client, 4, seconds=60)
                run.settle(row)
        assert "Vanished from the adapter's view" in adapter.log_text() or "vanished" in adapter.log_text()
    row.record()
    assert set(row.errors) and all(error.startswith("JobVanishedError") for error in row.errors)
    row.assert_clean(errors_allowed=True)


def test_a_client_that_exits_leaves_no_job_running(world: World) -> None:
    row = Row("the client exits with tasks running")
    with trial(world, "clientexit") as run:
        adapter = run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            futures = [client.submit(work, str(run.marks), key, 60.0) for key in range(6)]
            wait_for(lambda: world.running_count(run.adapter_id) >= 1, "a RUNNING job", interval=0.02)
        # The client left: the scheduler cancels its tasks and the adapter stops their jobs.
        wait_for(lambda: not world.live_jobs(run.adapter_id), "the client's jobs to be stopped")
        run.settle(row)
        row.tasks += len(futures)  # nobody waits for these results any more: none can be lost
        assert "cancelled job" in adapter.log_text()
    row.record()
    row.assert_clean()


@pytest.mark.parametrize(
    ("outage", "bound", "label"),
    # The 20 s outage at --vanish-after 10 and 75 s at the default 60 s, scaled down to keep the suite
    # quick; in both the outage outlasts the vanish bound, which is what made every task fail before.
    [(4.0, 2.0, "20 s at --vanish-after 10, scaled 1/5"), (7.5, 6.0, "75 s at --vanish-after 60, scaled 1/10")],
)
def test_expired_credentials_pause_the_adapter_instead_of_failing_tasks(
    world: World, outage: float, bound: float, label: str
) -> None:
    row = Row(f"the adapter's credentials expire for {outage:g} s, vanish bound {bound:g} s ({label})")
    with trial(world, "creds") as run:
        adapter = run.start_adapter(["--vanish-after", str(bound)])
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 8, seconds=1.0)
            wait_for(lambda: world.running_count(run.adapter_id) >= 1, "a RUNNING job", interval=0.02)
            world.emulator.faults.expire_credentials(ADAPTER_ENV["AWS_ACCESS_KEY_ID"], outage)
            run.settle(row)
        assert "AWS refused the credentials" in adapter.log_text(), "the outage reached the adapter"
    row.record()
    row.assert_clean()


def test_s3_slow_down(world: World) -> None:
    row = Row("30% of S3 requests answered 503 SlowDown (adapter and jobs)")
    with trial(world, "slowdown") as run, _faults(world, s3_slow_down_rate=0.3):
        world.emulator.reset_api_calls()
        run.start_adapter()
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 20, seconds=0.2)
            run.settle(row)
        assert world.emulator.api_calls.s3_slow_downs > 0
    row.record()
    row.assert_clean()


def test_kill_9_on_the_local_backend_reattaches_through_its_jobs_directory(world: World) -> None:
    row = Row("local backend: kill -9 with jobs RUNNING, restart on the same work directory")
    for number in range(2):
        with trial(world, f"localkill{number}") as run:
            local = ["--backend", "local", "--work-dir", str(run.dir / "work"), "--max-parallel", "2",
                     "--adapter-id", run.adapter_id, "--reattach-grace", "30"]  # fmt: skip
            first = run.start_adapter(args=local)
            with Client(address=run.cluster.addresses.scheduler) as client:
                run.submit(client, 6, seconds=1.5)
                wait_for(lambda: len(list(run.marks.iterdir())) >= 1, "a job to start", interval=0.01)
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
                run.start_adapter(args=local)
                run.settle(row)
            # Every job process the killed adapter started ended: none is left running untracked.
            row.orphans += sum(
                1 for path in (run.dir / "work" / "jobs").glob("*.pid") if _process_alive(int(path.read_text()))
            )
    row.record()
    row.assert_clean()


def test_kill_9_on_the_slurm_backend_reattaches_through_its_job_records(
    world: World, slurm_cluster: SlurmCluster
) -> None:
    row = Row("slurm backend: kill -9 with jobs RUNNING, restart on the same work directory")
    for number in range(2):
        with trial(world, f"slurmkill{number}") as run:
            work_dir = run.dir / "slurm"
            slurm = ["--backend", "slurm", "--work-dir", str(work_dir), "--adapter-id", run.adapter_id,
                     "--reattach-grace", "30"]  # fmt: skip
            first = run.start_adapter(args=slurm, env=slurm_cluster.env)
            with Client(address=run.cluster.addresses.scheduler) as client:
                run.submit(client, 6, seconds=1.5)
                wait_for(lambda: len(list(run.marks.iterdir())) >= 1, "a job to start", interval=0.01)
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
                run.start_adapter(args=slurm, env=slurm_cluster.env)
                run.settle(row)
            # Every job the killed adapter submitted ended or was stopped: none is left queued or running untracked.
            row.orphans += _live_slurm_jobs(slurm_cluster, work_dir / "jobs")
    row.record()
    row.assert_clean()


def _live_slurm_jobs(cluster: SlurmCluster, records: pathlib.Path) -> int:
    """Jobs (array children counted one by one) of this work directory that Slurm still queues or runs."""
    ids = {path.stem for path in records.glob("*.json")}
    listing = cluster.run("squeue", "--me", "--noheader", "--array", "-O", "ArrayJobID:|,State:|")
    live = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "SUSPENDED")
    return sum(1 for line in listing.stdout.splitlines() if line.split("|")[0] in ids and line.split("|")[1] in live)


def _process_alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
