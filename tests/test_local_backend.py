"""The local backend on its own: Batch-like job states, arrays, bounded parallelism, timeouts, cancel, retention."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator

import pytest

from conftest import wait_for
from scaler_aws_batch.backends.base import JobSpec, JobState
from scaler_aws_batch.backends.local.backend import TIMEOUT_REASON, LocalProcessBackend
from scaler_aws_batch.resources import Resources

#: A job command that records its Batch variables, then does what its payload says.
SCRIPT = """
import os, sys, time
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
name = os.environ["AWS_BATCH_JOB_ID"].replace(":", "_")
with open(os.path.join(out, name), "w") as handle:
    handle.write(os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX", "-") + " " + os.environ["AWS_BATCH_JOB_ATTEMPT"])
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def marks(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "marks"


def _backend(tmp_path: pathlib.Path, marks: pathlib.Path, *, retention_seconds: float = 600.0) -> LocalProcessBackend:
    command = [sys.executable, "-c", SCRIPT, str(marks), "Ref::payload"]
    return LocalProcessBackend(
        tmp_path / "work", command=command, max_parallel=2, kill_grace_seconds=0.5, retention_seconds=retention_seconds
    )


@pytest.fixture
def backend(tmp_path: pathlib.Path, marks: pathlib.Path) -> Iterator[LocalProcessBackend]:
    local = _backend(tmp_path, marks)
    yield local
    local.close()


def _spec(seconds: float, *, array_size: int | None = None, timeout: int = 600) -> JobSpec:
    return JobSpec(name="t", payload=str(seconds), resources=Resources(), timeout_seconds=timeout, tags={},
                   array_size=array_size)  # fmt: skip


def _final(backend: LocalProcessBackend, job_id: str) -> JobState:
    wait_for(lambda: backend.describe([job_id])[job_id].state.is_final, f"job {job_id} to finish")
    return backend.describe([job_id])[job_id].state


def test_array_children_see_their_index_and_the_parent_summarizes_them(
    backend: LocalProcessBackend, marks: pathlib.Path
) -> None:
    parent = backend.submit(_spec(0, array_size=3))
    assert _final(backend, parent) is JobState.SUCCEEDED
    status = backend.describe([parent])[parent]
    assert status.array_summary is not None and status.array_summary[JobState.SUCCEEDED] == 3
    seen = sorted((marks / f"{parent}_{index}").read_text() for index in range(3))
    assert seen == ["0 1", "1 1", "2 1"]


def test_parallelism_is_bounded_and_the_rest_wait_runnable(backend: LocalProcessBackend) -> None:
    jobs = [backend.submit(_spec(30)) for _ in range(3)]
    wait_for(lambda: sum(s.state is JobState.RUNNING for s in backend.describe(jobs).values()) == 2, "two running")
    states = [status.state for status in backend.describe(jobs).values()]
    assert states.count(JobState.RUNNING) == 2 and states.count(JobState.RUNNABLE) == 1
    queued = next(job for job in jobs if backend.describe([job])[job].state is JobState.RUNNABLE)
    backend.cancel(queued, JobState.RUNNABLE, "not needed")
    status = backend.describe([queued])[queued]
    assert status.state is JobState.FAILED and status.status_reason == "not needed" and status.attempts == 0


def test_timeout_stops_the_job_with_batchs_reason(backend: LocalProcessBackend) -> None:
    job = backend.submit(_spec(60, timeout=1))
    assert _final(backend, job) is JobState.FAILED
    status = backend.describe([job])[job]
    assert status.status_reason == TIMEOUT_REASON and status.exit_code == 143


def test_finished_jobs_are_forgotten_after_the_retention_period(tmp_path: pathlib.Path, marks: pathlib.Path) -> None:
    local = _backend(tmp_path, marks, retention_seconds=0.0)
    try:
        parent = local.submit(_spec(0, array_size=2))
        single = local.submit(_spec(0))
        wait_for(lambda: local.describe([parent, single, f"{parent}:0"]) == {}, "finished jobs to be forgotten")
    finally:
        local.close()
