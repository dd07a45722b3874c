"""Fault suite: the adapter (its own process, aws-batch backend) against the Batch emulator over HTTP, with a real
Scaler scheduler and client, under the faults an operator meets on a bad day.

Every case counts, per task: **lost** (the client never got a result or an error), **run twice** (the task's
function executed more than once: each execution leaves a marker file), **duplicate results** (an adapter handed a
result over more than once, from the adapters' logs), **orphans** (jobs left SUBMITTED..RUNNING once the last
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

from batch_emulator import BatchEmulator, EmulatorConfig
from conftest import WAIT_SECONDS, AdapterProcess, wait_for
from harness import BUCKET, PREFIX, SPOT_RETRY_STRATEGY, TIME_SCALE
from scaler_aws_batch.contracts import job_name_prefix
from scaler_aws_batch.embedded import EmbeddedScheduler

pytestmark = pytest.mark.e2e

#: The adapter's own credentials: distinct from the jobs', so a fault can expire only the adapter's.
ADAPTER_ENV = {"AWS_ACCESS_KEY_ID": "adapter", "AWS_SECRET_ACCESS_KEY": "adapter", "AWS_DEFAULT_REGION": "us-east-1"}
#: Scaler re-sends a dead worker's tasks after its worker timeout (60 s by default); shortened so trials stay quick.
WORKER_TIMEOUT_SECONDS = 5
LIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
_DELIVERED = re.compile(r"task ([0-9a-f]+): (?:success|failure) after")


def _make_work() -> Callable[[str, int, float], int]:
    def work(marks: str, key: int, seconds: float) -> int:
        """The task: leaves one marker file per execution, then works for a while."""
        import pathlib as _pathlib
        import time as _time
        import uuid as _uuid

        (_pathlib.Path(marks) / f"{key}-{_uuid.uuid4().hex}").touch()
        _time.sleep(seconds)
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
        self.queue, self.job_definition = emulator.create_queue_and_job_definition(
            retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600
        )
        emulator.client("s3").create_bucket(Bucket=BUCKET)

    def adapter_args(self, adapter_id: str, extra: Sequence[str] = ()) -> list[str]:
        return [
            "--backend", "aws-batch", "--job-queue", self.queue, "--job-definition", self.job_definition,
            "--bucket", BUCKET, "--prefix", PREFIX, "--region", self.emulator.region,
            "--endpoint-url", self.emulator.endpoint_url, "--adapter-id", adapter_id, "--reattach-grace", "30",
            "--shutdown-timeout", "60", *extra,
        ]  # fmt: skip

    def live_jobs(self, adapter_id: str) -> list[str]:
        """Job ids (array children included) of this adapter that are not finished, as AWS reports them."""
        batch = self.emulator.client("batch")
        name_filter = [{"name": "JOB_NAME", "values": [f"{job_name_prefix(adapter_id)}*"]}]
        live: list[str] = []
        for page in batch.get_paginator("list_jobs").paginate(jobQueue=self.queue, filters=name_filter):  # type: ignore[arg-type]
            live.extend(job["jobId"] for job in page["jobSummaryList"] if job["status"] in LIVE_STATES)
        return live

    def running_count(self, adapter_id: str) -> int:
        batch = self.emulator.client("batch")
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

    def start_adapter(self, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> AdapterProcess:
        args = self.world.adapter_args(self.adapter_id, extra)
        work_dir = self.dir / f"adapter-{len(self.adapters)}"
        adapter = AdapterProcess(self.cluster.addresses.scheduler, work_dir, args, {**ADAPTER_ENV, **(env or {})})
        self.adapters.append(adapter)
        return adapter

    def submit(self, client: Client, count: int, seconds: float) -> None:
        self.futures += [client.submit(work, str(self.marks), key, seconds) for key in range(count)]

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
        delivered = collections.Counter(
            match.group(1) for adapter in self.adapters for match in _DELIVERED.finditer(adapter.log_text())
        )
        row.duplicate_results += sum(count > 1 for count in delivered.values())
        row.orphans += len(self.world.live_jobs(self.adapter_id))


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
