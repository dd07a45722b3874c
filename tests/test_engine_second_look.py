"""The engine's second look: after taking an adapter id over from a dead adapter, tasks that find no job wait until a
SubmitJob the dead adapter had in flight can no longer land, then attach to the jobs found, or are submitted."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable

from scaler_aws_batch.backends.base import JobState, ListedJob
from scaler_aws_batch.contracts import job_name_prefix
from scaler_aws_batch.engine import JobEngine
from scaler_aws_batch.engine.work import TaskOutcome
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores.local import LocalDirectoryStore
from test_engine_parts import FakeBackend, _settings, _work

HANG_GUARD_SECONDS = 30.0


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while not predicate():
            await asyncio.sleep(0.01)


def _engine(backend: FakeBackend, tmp_path: pathlib.Path, second_look_after_seconds: float) -> JobEngine:
    settings = _settings(second_look_after_seconds=second_look_after_seconds, array_window_seconds=0.0)
    return JobEngine(backend, LocalDirectoryStore(tmp_path / "store"), settings, KeyRing((b"k" * 64,)))


def test_tasks_without_a_job_wait_for_the_second_look_and_attach_to_a_job_that_landed_late(
    tmp_path: pathlib.Path,
) -> None:
    async def scenario() -> tuple[FakeBackend, JobEngine, list[asyncio.Future[TaskOutcome]]]:
        backend = FakeBackend()
        engine = _engine(backend, tmp_path, second_look_after_seconds=0.5)
        await engine.take_stock()  # nothing yet: the dead adapter's SubmitJob has not landed
        running = asyncio.ensure_future(engine.run())
        futures = [engine.submit(_work("landed")), engine.submit(_work("never-sent"))]
        assert backend.submitted == [], "held until the second look"
        # The in-flight SubmitJob lands now, before the second look.
        backend.listed.append(ListedJob("late", f"{job_name_prefix('parts')}landed", JobState.RUNNING, None,
                                        ("landed",)))  # fmt: skip
        await _until(lambda: backend.calls["find_jobs"] == 2 and len(backend.submitted) == 1)
        running.cancel()
        return backend, engine, futures

    backend, engine, futures = asyncio.run(scenario())
    assert [spec.task_ids for spec in backend.submitted] == [("never-sent",)]  # only the task without a job
    assert engine.stats["attached"] == 1
    assert not any(future.done() for future in futures)


def test_a_clean_start_submits_at_once_with_no_second_look(tmp_path: pathlib.Path) -> None:
    async def scenario() -> FakeBackend:
        backend = FakeBackend()
        engine = _engine(backend, tmp_path, second_look_after_seconds=0.0)
        await engine.take_stock()
        running = asyncio.ensure_future(engine.run())
        engine.submit(_work("t1"))
        await _until(lambda: len(backend.submitted) == 1)
        running.cancel()
        return backend

    backend = asyncio.run(scenario())
    assert backend.calls["find_jobs"] == 1
