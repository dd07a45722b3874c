"""End to end on the embedded local default: a real Scaler scheduler and client, the adapter process, and each task
running as a local job process of the real runner."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import pickle
import textwrap
import time
from typing import Any

import cloudpickle
import pytest
from scaler import Client

from conftest import WAIT_SECONDS, AdapterProcess, scaler_with_adapter, wait_for
from scaler_aws_batch import CommandResult, submit_command
from scaler_aws_batch.errors import CommandFailedError, JobTimeoutError, PythonVersionMismatchError
from scaler_aws_batch.wire import python_version_tag

pytestmark = pytest.mark.e2e


def _job_records(adapter: AdapterProcess) -> list[dict[str, Any]]:
    records = [json.loads(path.read_text()) for path in (adapter.work_dir / "jobs").glob("*.json")]
    return sorted(records, key=lambda record: record["createdAt"])


def test_sqrt(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, _ = local_adapter
    assert client.submit(math.sqrt, 16).result(timeout=WAIT_SECONDS) == 4.0


def test_map_over_100_items(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, adapter = local_adapter
    before = len(_job_records(adapter))
    results = client.map(lambda x: x * x + 1, range(100))
    assert list(results) == [x * x + 1 for x in range(100)]
    new_jobs = _job_records(adapter)[before:]
    # Tasks that arrive together are packed into array jobs: far fewer jobs than tasks.
    assert sum(job["arraySize"] or 1 for job in new_jobs) == 100
    assert len(new_jobs) < 100


def test_lambdas_and_closures(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, _ = local_adapter
    offset = 17
    scale = {"factor": 3}

    def closure(value: int) -> int:
        return value * scale["factor"] + offset

    assert client.submit(closure, 5).result(timeout=WAIT_SECONDS) == 32
    assert client.submit(lambda text: text[::-1], "abc").result(timeout=WAIT_SECONDS) == "cba"


def test_ten_megabyte_argument_travels_through_the_store(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, adapter = local_adapter
    blob = os.urandom(10 * 1024 * 1024)  # incompressible: gzip cannot make it fit inline
    digest = client.submit(lambda data: hashlib.sha256(data).hexdigest(), blob).result(timeout=WAIT_SECONDS)
    assert digest == hashlib.sha256(blob).hexdigest()
    # The argument's serialized bytes are a content-addressed object in the store, not in the job parameters.
    serialized = cloudpickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)
    assert (adapter.work_dir / "store" / "objects" / hashlib.sha256(serialized).hexdigest()).is_file()
    last_job = _job_records(adapter)[-1]
    assert last_job["payloadChars"] < 8192


def test_exception_reaches_the_client_with_type_and_message(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, _ = local_adapter

    def explode() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match=r"^boom$"):
        client.submit(explode).result(timeout=WAIT_SECONDS)


def test_custom_serializer_is_used_both_ways(tmp_path: pathlib.Path) -> None:
    from scaler.client.serializer.mixins import Serializer

    class TaggedSerializer(Serializer):  # defined locally: cloudpickle ships it by value to the runner
        @staticmethod
        def serialize(obj: Any) -> bytes:
            return b"TAGGED1" + cloudpickle.dumps(obj)

        @staticmethod
        def deserialize(payload: bytes) -> Any:
            if not payload.startswith(b"TAGGED1"):
                raise ValueError("not produced by TaggedSerializer")
            return cloudpickle.loads(payload[len(b"TAGGED1") :])

    with scaler_with_adapter(tmp_path, ["--backend", "local", "--work-dir", str(tmp_path)]) as (_, adapter):
        # A second client on the same scheduler, with the custom serializer.
        with Client(address=adapter.scheduler, serializer=TaggedSerializer()) as tagged:
            assert tagged.submit(lambda x: {"doubled": x * 2}, 21).result(timeout=WAIT_SECONDS) == {"doubled": 42}


def test_result_type_only_the_job_can_import(tmp_path: pathlib.Path) -> None:
    """The adapter process cannot import the result's class; the result still arrives, so it passed bytes through."""
    module_dir = tmp_path / "jobonly"
    module_dir.mkdir()
    (module_dir / "jobonly_types.py").write_text(
        textwrap.dedent(
            """
            class Measurement:
                def __init__(self, value):
                    self.value = value
            """
        )
    )
    work_dir = tmp_path / "work"
    args = ["--backend", "local", "--work-dir", str(work_dir), "--job-env", f"PYTHONPATH={module_dir}"]
    with scaler_with_adapter(work_dir, args) as (client, adapter):

        def measure(value: float) -> Any:
            import jobonly_types  # type: ignore[import-not-found]

            return jobonly_types.Measurement(value)

        import sys

        sys.path.insert(0, str(module_dir))  # only the client and the job can import it
        try:
            result = client.submit(measure, 2.5).result(timeout=WAIT_SECONDS)
        finally:
            sys.path.remove(str(module_dir))
        assert type(result).__name__ == "Measurement" and result.value == 2.5
        assert "jobonly_types" not in adapter.log_text()


def test_command_task_success_and_failure(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, _ = local_adapter
    ok = submit_command(client, "echo out-line; echo err-line >&2").result(timeout=WAIT_SECONDS)
    assert isinstance(ok, CommandResult)
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "out-line\n", "err-line\n")

    failing = submit_command(client, "echo about to fail >&2; exit 3")
    with pytest.raises(CommandFailedError) as caught:
        failing.result(timeout=WAIT_SECONDS)
    assert caught.value.exit_code == 3
    assert "about to fail" in caught.value.stderr_tail


def test_cancel_running_task_stops_the_job(
    local_adapter: tuple[Client, AdapterProcess], tmp_path: pathlib.Path
) -> None:
    client, _ = local_adapter
    pid_file = tmp_path / "pid"

    def long_task(path: str) -> str:
        import os
        import time

        with open(path, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(600)
        return "should never arrive"

    future = client.submit(long_task, str(pid_file))
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", "the job to start")
    pid = int(pid_file.read_text())
    assert future.cancel(timeout=WAIT_SECONDS)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, "the job's process to be stopped")
    assert future.cancelled()
    time.sleep(0.5)  # a late result would flip the future; it must stay cancelled
    assert future.cancelled()


def test_max_concurrent_jobs_bounds_running_tasks(tmp_path: pathlib.Path) -> None:
    work_dir = tmp_path / "work"
    marks = tmp_path / "running"
    marks.mkdir()
    args = ["--backend", "local", "--work-dir", str(work_dir), "--max-concurrent-jobs", "2", "--max-parallel", "4"]
    with scaler_with_adapter(work_dir, args) as (client, _):

        def busy(directory: str) -> int:
            import os
            import time
            import uuid

            mark = os.path.join(directory, uuid.uuid4().hex)
            open(mark, "w").close()
            seen = len(os.listdir(directory))
            time.sleep(0.5)
            os.remove(mark)
            return seen

        seen = [future.result(timeout=WAIT_SECONDS) for future in [client.submit(busy, str(marks)) for _ in range(6)]]
    assert max(seen) <= 2


def test_job_timeout_gives_a_timeout_error(tmp_path: pathlib.Path) -> None:
    work_dir = tmp_path / "work"
    with scaler_with_adapter(work_dir, ["--backend", "local", "--work-dir", str(work_dir), "--job-timeout", "2"]) as (
        client,
        _,
    ):
        with pytest.raises(JobTimeoutError, match="timeout"):
            client.submit(lambda seconds: time.sleep(seconds), 120).result(timeout=WAIT_SECONDS)


def test_python_version_mismatch_is_refused_with_what_to_fix(tmp_path: pathlib.Path) -> None:
    work_dir = tmp_path / "work"
    args = ["--backend", "local", "--work-dir", str(work_dir), "--client-python", "3.9"]
    # The readiness probe in scaler_with_adapter would itself be refused, so build the pieces by hand.
    from scaler_aws_batch.embedded import EmbeddedScheduler

    with EmbeddedScheduler(log_path=str(tmp_path / "scheduler.log")) as cluster:
        adapter = AdapterProcess(cluster.addresses.scheduler, work_dir, args, {})
        try:
            with Client(address=cluster.addresses.scheduler) as client:
                with pytest.raises(PythonVersionMismatchError) as caught:
                    client.submit(math.sqrt, 4).result(timeout=WAIT_SECONDS)
        finally:
            adapter.stop()
    message = str(caught.value)
    assert "3.9" in message and python_version_tag() in message and "python_version" in message


def test_resources_from_capabilities_reach_the_job_spec(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, adapter = local_adapter
    future = client.submit_verbose(math.floor, args=(2.5,), kwargs={}, capabilities={"vcpus": 2, "memory": 3072})
    assert future.result(timeout=WAIT_SECONDS) == 2
    last_job = _job_records(adapter)[-1]
    assert last_job["resourceRequirements"] == [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "3072"}]


def test_runner_and_adapter_output_never_contain_argument_values(local_adapter: tuple[Client, AdapterProcess]) -> None:
    client, adapter = local_adapter
    secret = "SECRET-ARGUMENT-7f3a9c"
    assert client.submit(lambda s: len(s), secret).result(timeout=WAIT_SECONDS) == len(secret)
    assert client.submit(lambda s: s + "-RESULT", secret).result(timeout=WAIT_SECONDS) == secret + "-RESULT"
    logs = [adapter.log_text()] + [path.read_text() for path in (adapter.work_dir / "logs").glob("*.log")]
    assert logs and all(secret not in text for text in logs)
    assert any("task" in text for text in logs[1:]), "the runner logs ids and timings"
