"""The shared job engine with the real local backend and store: payload transport choice, arrays, failures."""

from __future__ import annotations

import asyncio
import os
import pathlib
import pickle
import time
from typing import Any
from urllib.parse import urlparse

import cloudpickle
import pytest
from scaler.client.serializer.default import DefaultSerializer

from scaler_aws_batch.backends.base import JobSpec, JobState, JobStatus
from scaler_aws_batch.backends.local.backend import LocalProcessBackend
from scaler_aws_batch.contracts import RunnerExit, StatusReason
from scaler_aws_batch.engine import (
    EngineSettings,
    JobEngine,
    TaskOutcome,
    TaskWork,
    classify_failure,
    new_nonce,
    plan_payload,
)
from scaler_aws_batch.errors import (
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    OverridesTooLongError,
    PayloadRejectedError,
    PayloadTamperedError,
    SpotRetriesExhaustedError,
)
from scaler_aws_batch.job_parameter import parse_parameter
from scaler_aws_batch.limits import MAX_CONTAINER_OVERRIDES_CHARS
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.signing import KeyRing, ensure_key_file, job_key_environment
from scaler_aws_batch.stores.local import LocalDirectoryStore
from scaler_aws_batch.wire import TaskBlobs, decode_payload, python_version_tag

SERIALIZER = cloudpickle.dumps(DefaultSerializer())
SETTINGS = EngineSettings(
    adapter_id="test-adapter",
    client_python=python_version_tag(),
    cloudpickle_version=cloudpickle.__version__,
    array_window_seconds=0.01,
    poll_interval_min_seconds=0.02,
    poll_interval_max_seconds=0.2,
)


def _blobs(task_id: str, function: Any, *arguments: Any) -> TaskBlobs:
    return TaskBlobs(
        task_id=task_id,
        serializer=SERIALIZER,
        function=DefaultSerializer.serialize(function),
        arguments=tuple(DefaultSerializer.serialize(argument) for argument in arguments),
    )


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> KeyRing:
    return ensure_key_file(tmp_path / "signing.key")


@pytest.fixture
def backend(tmp_path: pathlib.Path, keys: KeyRing) -> Any:
    job_env = job_key_environment(key_file=tmp_path / "signing.key")
    local = LocalProcessBackend(tmp_path / "work", max_parallel=2, job_env=job_env)
    yield local
    local.close()


def _plan(tasks: list[TaskBlobs], backend: LocalProcessBackend, store: LocalDirectoryStore, keys: KeyRing) -> Any:
    return plan_payload(
        tasks, spec=SPEC, backend=backend, store_url=store.url, settings=SETTINGS, keys=keys, nonce=new_nonce()
    )


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LocalDirectoryStore:
    return LocalDirectoryStore(tmp_path / "store")


SPEC = JobSpec(name="scaler-test", payload="", resources=Resources(), timeout_seconds=600, tags={})


def _plan_for(size: int, backend: LocalProcessBackend, store: LocalDirectoryStore, seed: bytes) -> str:
    blob = (seed * (size // len(seed) + 1))[:size]
    return str(_plan([_blobs("t", len, blob)], backend, store, KeyRing((b"k" * 64,))).transport)


def test_inline_threshold_is_computed_from_the_rendered_overrides(
    backend: LocalProcessBackend, store: LocalDirectoryStore
) -> None:
    seed = os.urandom(1 << 16)  # incompressible, so gzip cannot move the threshold
    low, high = 0, 16_384
    while high - low > 1:  # the largest argument that still travels inline
        middle = (low + high) // 2
        low, high = (middle, high) if _plan_for(middle, backend, store, seed) == "inline" else (low, middle)
    at, above = low, low + 1
    assert _plan_for(at, backend, store, seed) == "inline"
    assert _plan_for(above, backend, store, seed) != "inline"
    # base64 costs 4/3, so the raw budget is well under the 8,192 characters, as docs/aws-limits.md explains.
    assert 4_000 < at < 6_144
    blob = (seed * 2)[:at]
    plan = _plan([_blobs("t", len, blob)], backend, store, KeyRing((b"k" * 64,)))
    spec = JobSpec(name="x", payload=plan.parameter, resources=Resources(), timeout_seconds=600, tags={})
    assert backend.overrides_length(spec) <= SETTINGS.overrides_budget_chars < MAX_CONTAINER_OVERRIDES_CHARS


def test_compressible_payload_is_gzipped_to_fit(backend: LocalProcessBackend, store: LocalDirectoryStore) -> None:
    assert _plan_for(50_000, backend, store, b"abcdefgh") == "inline-gzip"


def test_array_payload_holds_the_shared_function_once(
    backend: LocalProcessBackend, store: LocalDirectoryStore, keys: KeyRing
) -> None:
    tasks = [_blobs(f"t{index}", len, b"x" * index) for index in range(50)]
    plan = _plan(tasks, backend, store, keys)
    parameter = parse_parameter(plan.parameter)
    envelope = parameter.envelope if hasattr(parameter, "envelope") else store.get(plan.parameter.split(":")[2])
    payload = decode_payload(envelope, keys)
    assert len(payload.tasks) == 50
    assert len({task.function.sha256 for task in payload.tasks}) == 1
    function_bytes = DefaultSerializer.serialize(len)
    assert payload.blob_area.count(function_bytes) == 1


def _value(outcome: TaskOutcome) -> Any:
    assert outcome.success, pickle.loads(outcome.body)
    return DefaultSerializer.deserialize(outcome.body)


def test_engine_runs_each_transport_end_to_end(
    backend: LocalProcessBackend, store: LocalDirectoryStore, keys: KeyRing
) -> None:
    async def scenario() -> None:
        engine = JobEngine(backend, store, SETTINGS, keys)
        runner = asyncio.create_task(engine.run())
        try:
            blobs = {
                "small": b"x",
                "at-threshold": os.urandom(4_000),
                "compressible": b"y" * 60_000,
                "large": os.urandom(300_000),
            }
            futures = {name: engine.submit(TaskWork(_blobs(name, len, data))) for name, data in blobs.items()}
            results = {name: _value(await asyncio.wait_for(future, 120)) for name, future in futures.items()}
            # Results are consumed: once the outcomes are handed over, their objects are deleted (in one batch).
            results_dir = pathlib.Path(urlparse(store.url).path) / "results"
            deadline = time.monotonic() + 120
            while list(results_dir.glob("*")) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not list(results_dir.glob("*"))
        finally:
            runner.cancel()
        assert results == {name: len(data) for name, data in blobs.items()}
        assert engine.stats["succeeded"] == 4
        assert engine.stats["jobs:array"] + engine.stats["jobs:single"] >= 1

    asyncio.run(scenario())


def test_job_without_result_becomes_a_clear_error(
    backend: LocalProcessBackend, store: LocalDirectoryStore, keys: KeyRing
) -> None:
    async def scenario() -> TaskOutcome:
        engine = JobEngine(backend, store, SETTINGS, keys)
        runner = asyncio.create_task(engine.run())
        try:
            # A task whose runner dies without writing a result: the job fails with a non-zero exit code.
            return await asyncio.wait_for(engine.submit(TaskWork(_blobs("t", os._exit, 9))), 120)
        finally:
            runner.cancel()

    outcome = asyncio.run(scenario())
    error = pickle.loads(outcome.body)
    assert not outcome.success and isinstance(error, JobFailedError)
    assert error.exit_code == 9 and "exit code 9" in str(error) and "last log lines" in str(error)


@pytest.mark.parametrize(
    ("reason", "exit_code", "expected"),
    [
        (StatusReason.TIMEOUT, 143, JobTimeoutError),
        (
            f"{StatusReason.SPOT_RECLAIM_PREFIX} (instance i-0123456789abcdef0) terminated.",
            None,
            SpotRetriesExhaustedError,
        ),
        (StatusReason.OVERRIDES_TOO_LONG, None, OverridesTooLongError),
        (StatusReason.ESSENTIAL_CONTAINER_EXITED, 137, JobOutOfMemoryError),
        (StatusReason.ESSENTIAL_CONTAINER_EXITED, 2, JobFailedError),
        (StatusReason.ESSENTIAL_CONTAINER_EXITED, RunnerExit.BAD_PAYLOAD, PayloadRejectedError),
        (StatusReason.ESSENTIAL_CONTAINER_EXITED, RunnerExit.PAYLOAD_REPLACED, PayloadTamperedError),
    ],
)
def test_failed_jobs_are_classified(reason: str, exit_code: int | None, expected: type[JobFailedError]) -> None:
    status = JobStatus(job_id="j-1", state=JobState.FAILED, status_reason=reason, exit_code=exit_code, attempts=2)
    error = classify_failure(status, ["line one", "line two"])
    assert type(error) is expected
    assert "j-1" in str(error) and error.job_id == "j-1"
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is expected and str(restored) == str(error) and restored.exit_code == error.exit_code
    if expected is PayloadTamperedError:  # names the cause the user must look into, not a deletion
        assert "tampering" in str(error) and "replaced" in str(error) and "delet" not in str(error)
