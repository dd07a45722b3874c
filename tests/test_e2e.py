"""End to end, on every backend: a real Scaler scheduler and client, the adapter process, and each task running as
a job of the real runner: a local process, an AWS Batch job in the emulator (moto server over HTTP), or a Slurm job
on a one-node cluster of this machine."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pathlib
import pickle
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from scaler import Client

from backend_harnesses import BACKENDS, started_harness
from conftest import WAIT_SECONDS, wait_for
from harness import Harness, ImageHarness
from job_image import open_to_the_job
from scaler_aws_batch import CommandResult, submit_command
from scaler_aws_batch.errors import (
    CapabilityError,
    CommandFailedError,
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    PayloadError,
    PythonVersionMismatchError,
    ResultRejectedError,
    ResultSerializationError,
    UnpicklableExceptionError,
)
from scaler_aws_batch.wire import python_version_tag

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with started_harness(request, tmp_path_factory) as started:
        yield started


@pytest.fixture(autouse=True)
def job_execution(request: pytest.FixtureRequest, harness: Harness) -> Iterator[None]:
    """Jobs of tests marked ``job_processes`` are real processes; the others may run on the emulator's threads. In
    the image, a test's own directory is open to the job's unprivileged user."""
    if isinstance(harness, ImageHarness) and "tmp_path" in request.fixturenames:
        tmp_path: pathlib.Path = request.getfixturevalue("tmp_path")
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        open_to_the_job(tmp_path, stop=factory.getbasetemp().parent)
    processes = request.node.get_closest_marker("job_processes") is not None
    with harness.job_processes() if processes else contextlib.nullcontext():
        yield


def test_sqrt(harness: Harness) -> None:
    assert harness.client.submit(math.sqrt, 16).result(timeout=WAIT_SECONDS) == 4.0


def test_map_over_100_items(harness: Harness) -> None:
    before = len(harness.job_records())
    results = harness.client.map(lambda x: x * x + 1, range(100))
    assert list(results) == [x * x + 1 for x in range(100)]
    new_jobs = harness.job_records()[before:]
    # Tasks that arrive together are packed into array jobs: far fewer jobs than tasks.
    assert sum(job["arraySize"] or 1 for job in new_jobs) == 100
    assert len(new_jobs) < 100


def test_lambdas_and_closures(harness: Harness) -> None:
    offset = 17
    scale = {"factor": 3}

    def closure(value: int) -> int:
        return value * scale["factor"] + offset

    assert harness.client.submit(closure, 5).result(timeout=WAIT_SECONDS) == 32
    assert harness.client.submit(lambda text: text[::-1], "abc").result(timeout=WAIT_SECONDS) == "cba"


def test_ten_megabyte_argument_travels_through_the_store(harness: Harness) -> None:
    blob = os.urandom(10 * 1024 * 1024)  # incompressible: gzip cannot make it fit inline
    future = harness.client.submit(lambda data: hashlib.sha256(data).hexdigest(), blob)
    assert future.result(timeout=WAIT_SECONDS) == hashlib.sha256(blob).hexdigest()
    # The argument's serialized bytes are a content-addressed object in the store, not in the job parameters.
    serialized = cloudpickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)
    assert harness.stored_object_exists(f"objects/{hashlib.sha256(serialized).hexdigest()}")


def test_exception_reaches_the_client_with_type_and_message(harness: Harness) -> None:
    def explode() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match=r"^boom$"):
        harness.client.submit(explode).result(timeout=WAIT_SECONDS)


def test_unpicklable_result_is_a_clear_error(harness: Harness) -> None:
    def make_lock() -> Any:
        import threading

        return threading.Lock()

    with pytest.raises(ResultSerializationError, match="cannot serialize"):
        harness.client.submit(make_lock).result(timeout=WAIT_SECONDS)


@pytest.mark.job_processes
def test_job_killed_like_the_oom_killer_does_is_an_out_of_memory_error(harness: Harness) -> None:
    if isinstance(harness, ImageHarness):
        pytest.skip(
            "in its container the job is PID 1, which no signal from inside can kill, as on Batch; the kernel's own "
            "out-of-memory kill in the image is tests/test_image.py::test_a_task_beyond_its_memory_is_killed_..."
        )

    def killed() -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does: exit code 137, no result

    with pytest.raises(JobOutOfMemoryError, match="capability memory") as caught:
        harness.client.submit(killed).result(timeout=WAIT_SECONDS)
    assert caught.value.exit_code == 137 and "last log lines" in str(caught.value)


def test_custom_serializer_is_used_both_ways(harness: Harness) -> None:
    from scaler.client.serializer.mixins import Serializer

    class TaggedSerializer(Serializer):  # type: ignore[misc]  # defined locally: shipped by value to the runner
        @staticmethod
        def serialize(obj: Any) -> bytes:
            return b"TAGGED1" + bytes(cloudpickle.dumps(obj))

        @staticmethod
        def deserialize(payload: bytes) -> Any:
            if not payload.startswith(b"TAGGED1"):
                raise ValueError("not produced by TaggedSerializer")
            return cloudpickle.loads(payload[len(b"TAGGED1") :])

    with Client(address=harness.adapter.scheduler, serializer=TaggedSerializer()) as tagged:
        assert tagged.submit(lambda x: {"doubled": x * 2}, 21).result(timeout=WAIT_SECONDS) == {"doubled": 42}


@pytest.mark.job_processes
def test_result_type_only_the_job_can_import(harness: Harness, tmp_path: pathlib.Path) -> None:
    """The adapter process cannot import the result's class; the result still arrives, so it passed bytes through."""
    module_dir = tmp_path / "jobonly"
    module_dir.mkdir()
    source = "class Measurement:\n    def __init__(self, value):\n        self.value = value\n"
    (module_dir / "jobonly_types.py").write_text(textwrap.dedent(source))
    with harness.variant(tmp_path / "work", job_env={"PYTHONPATH": str(module_dir)}) as (client, adapter):

        def measure(value: float) -> Any:
            import jobonly_types  # type: ignore[import-not-found]

            return jobonly_types.Measurement(value)

        sys.path.insert(0, str(module_dir))  # only the client and the job can import it
        try:
            result = client.submit(measure, 2.5).result(timeout=WAIT_SECONDS)
        finally:
            sys.path.remove(str(module_dir))
        assert type(result).__name__ == "Measurement" and result.value == 2.5
        assert "jobonly_types" not in adapter.log_text()


def test_command_task_success_and_failure(harness: Harness) -> None:
    ok = submit_command(harness.client, "echo out-line; echo err-line >&2").result(timeout=WAIT_SECONDS)
    assert isinstance(ok, CommandResult)
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "out-line\n", "err-line\n")

    failing = submit_command(harness.client, "echo about to fail >&2; exit 3")
    with pytest.raises(CommandFailedError) as caught:
        failing.result(timeout=WAIT_SECONDS)
    assert caught.value.exit_code == 3
    assert "about to fail" in caught.value.stderr_tail


@pytest.mark.job_processes
def test_cancel_running_task_stops_the_job(harness: Harness, tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "pid"

    def long_task(path: str) -> str:
        import os
        import time

        with open(path, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(600)
        return "should never arrive"

    future = harness.client.submit(long_task, str(pid_file))
    wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", "the job to start")
    pid = int(pid_file.read_text())
    assert future.cancel(timeout=WAIT_SECONDS)

    wait_for(lambda: harness.job_stopped(pid), "the job's process to be stopped")
    assert future.cancelled()
    time.sleep(0.5)  # a late result would flip the future; it must stay cancelled
    assert future.cancelled()


def test_max_concurrent_jobs_bounds_running_tasks(harness: Harness, tmp_path: pathlib.Path) -> None:
    marks = tmp_path / "running"
    marks.mkdir()
    marks.chmod(0o777)  # the job may run as another user (the image's)
    with harness.variant(tmp_path / "work", ["--max-concurrent-jobs", "2"]) as (client, _):

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
    assert len(seen) == 6 and max(seen) <= 2


class _PriorityClient(Client):  # type: ignore[misc]
    """Scaler sets priority only for tasks submitted from inside a task; this client sets it directly."""

    priority = 0

    def _Client__get_task_flags(self) -> Any:
        from scaler.utility.metadata.task_flags import TaskFlags

        return TaskFlags(profiling=False, priority=self.priority, stream_output=False)


def test_higher_priority_tasks_start_first(harness: Harness, tmp_path: pathlib.Path) -> None:
    order, gate, started = tmp_path / "order", tmp_path / "gate", tmp_path / "started"

    def record(name: str, order_path: str, gate_path: str, started_path: str) -> str:
        import os
        import time

        if name == "blocker":  # holds the only job slot until the test opens the gate
            open(started_path, "w").close()
            while not os.path.exists(gate_path):
                time.sleep(0.05)
        with open(order_path, "a") as handle:
            handle.write(name + "\n")
        return name

    args = ["--max-concurrent-jobs", "1", "--queue-size", "10", "--log-level", "DEBUG"]
    with harness.variant(tmp_path / "work", args) as (_, adapter):
        with _PriorityClient(address=adapter.scheduler) as client:
            paths = (str(order), str(gate), str(started))
            blocker = client.submit(record, "blocker", *paths)
            wait_for(started.exists, "the blocker to hold the only slot")
            low = [client.submit(record, f"low-{index}", *paths) for index in range(2)]
            client.priority = 5
            high = client.submit(record, "high", *paths)
            wait_for(lambda: adapter.log_text().count(": queued with priority") >= 5, "every task in the queue")
            gate.touch()
            for future in [blocker, *low, high]:
                future.result(timeout=WAIT_SECONDS)
    assert order.read_text().split() == ["blocker", "high", "low-0", "low-1"]


@pytest.mark.job_processes
def test_job_timeout_gives_a_timeout_error(harness: Harness) -> None:
    future = harness.client.submit_verbose(
        lambda seconds: time.sleep(seconds), args=(600,), kwargs={}, capabilities={"timeout": harness.short_timeout}
    )
    with pytest.raises(JobTimeoutError, match="timeout"):
        # A hang guard on top of the timeout itself: Slurm enforces time limits on a 30 s cycle, so its job stops
        # 60 to 90 s after it started.
        future.result(timeout=harness.short_timeout + WAIT_SECONDS)


def test_python_version_mismatch_is_refused_with_what_to_fix(harness: Harness, tmp_path: pathlib.Path) -> None:
    with harness.variant(tmp_path / "work", ["--client-python", "3.9"], probe=False) as (client, _):
        with pytest.raises(PythonVersionMismatchError) as caught:
            client.submit(math.sqrt, 4).result(timeout=WAIT_SECONDS)
    message = str(caught.value)
    assert "3.9" in message and python_version_tag() in message and "python_version" in message


def test_resources_from_capabilities_reach_the_job_spec(harness: Harness) -> None:
    future = harness.client.submit_verbose(
        math.floor, args=(2.5,), kwargs={}, capabilities={"vcpus": 2, "memory": 3072}
    )
    assert future.result(timeout=WAIT_SECONDS) == 2
    requirements = harness.job_records()[-1]["resourceRequirements"]
    assert {"type": "VCPU", "value": "2"} in requirements and {"type": "MEMORY", "value": "3072"} in requirements


def test_runner_and_adapter_output_never_contain_argument_values(harness: Harness) -> None:
    secret = "SECRET-ARGUMENT-7f3a9c"
    assert harness.client.submit(lambda s: len(s), secret).result(timeout=WAIT_SECONDS) == len(secret)
    assert harness.client.submit(lambda s: s + "-RESULT", secret).result(timeout=WAIT_SECONDS) == secret + "-RESULT"
    job_logs = harness.job_logs()
    assert job_logs and any("task" in text for text in job_logs), "the runner logs ids and timings"
    assert all(secret not in text for text in [harness.adapter.log_text(), *job_logs])


# --- trust: signed results, re-uploaded blobs, checked requests ---------------------------------------------------


@pytest.mark.job_processes
def test_a_result_written_by_another_submission_of_the_same_task_is_taken(harness: Harness) -> None:
    """Two submissions of one task ran at once (Scaler sent it again to another adapter) and the other one wrote its
    result last: a genuinely signed result of the same task with the other submission's nonce. Once the task's own
    job has ended, the task gets that result instead of failing."""

    def answer_as_another_submission() -> int:
        import os
        import sys

        from scaler.client.serializer.default import DefaultSerializer

        from scaler_aws_batch import job_parameter, wire
        from scaler_aws_batch.signing import load_job_keys
        from scaler_aws_batch.stores import open_store

        parameter = job_parameter.parse_parameter(sys.argv[sys.argv.index("--payload") + 1])
        # No `assert` in a task: pytest rewrites it into a call of its own module, which the job image lacks.
        if not isinstance(parameter, job_parameter.InlineParameter):
            raise TypeError(f"expected an inline payload, got {parameter!r}")
        payload = wire.decode_payload(parameter.envelope, load_job_keys(os.environ))
        (task,) = payload.tasks
        theirs = wire.TaskResultEnvelope(
            task_id=task.task_id, status="success", body=DefaultSerializer.serialize(42), nonce="another-submission"
        ).encode(payload.reply_keys)
        open_store(payload.result_store).put(wire.result_key(task.task_id), theirs)
        os._exit(0)  # before this runner writes its own: the other submission's result is the one stored

    assert harness.client.submit(answer_as_another_submission).result(timeout=WAIT_SECONDS) == 42
    assert "written by another submission of the same task" in harness.adapter.log_text()
    assert harness.client.submit(math.sqrt, 9).result(timeout=WAIT_SECONDS) == 3.0


@pytest.mark.job_processes
def test_forged_result_is_refused_and_never_unpickled(harness: Harness, tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "forged-result-was-unpickled"

    def forge_own_result(marker_path: str) -> str:
        """Inside the job, play someone with write access to the store but not the key: read the task id and the
        nonce from the payload and store a well-formed result, signed with another key, that creates a file when
        unpickled. Then end the job at once (exit 0), before the runner can replace the forged result with its own:
        only the adapter's check stands."""
        import json
        import os
        import pathlib
        import pickle
        import sys

        from scaler_aws_batch import job_parameter, wire
        from scaler_aws_batch.signing import KeyRing
        from scaler_aws_batch.stores import open_store

        parameter = job_parameter.parse_parameter(sys.argv[sys.argv.index("--payload") + 1])
        # No `assert` in a task: pytest rewrites it into a call of its own module, which the job image lacks.
        if not isinstance(parameter, job_parameter.InlineParameter):
            raise TypeError(f"expected an inline payload, got {parameter!r}")
        envelope = parameter.envelope
        if envelope[:2] == b"\x1f\x8b":
            import gzip

            envelope = gzip.decompress(envelope)
        header_length = int.from_bytes(envelope[6:10], "big")
        header = json.loads(envelope[10 : 10 + header_length])
        task = header["tasks"][int(os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX") or 0)]

        class Marker:
            def __reduce__(self) -> tuple[object, tuple[object, ...]]:
                return (pathlib.Path.touch, (pathlib.Path(marker_path),))

        forged = wire.TaskResultEnvelope(
            task_id=task["task_id"], status="success", body=pickle.dumps(Marker()), nonce=header["nonce"]
        ).encode(KeyRing((b"forger" * 11,)))
        open_store(header["result_store"]).put(wire.result_key(task["task_id"]), forged)
        os._exit(0)

    with pytest.raises(ResultRejectedError, match="signature does not match"):
        harness.client.submit(forge_own_result, str(marker)).result(timeout=WAIT_SECONDS)
    assert not marker.exists(), "the forged result was unpickled"
    assert harness.client.submit(math.sqrt, 9).result(timeout=WAIT_SECONDS) == 3.0  # the adapter keeps serving


def test_tampered_stored_blob_is_uploaded_again(harness: Harness) -> None:
    blob = os.urandom(64 * 1024)  # incompressible: it travels as a stored object

    def digest(data: bytes) -> str:
        import hashlib

        return hashlib.sha256(data).hexdigest()

    expected = hashlib.sha256(blob).hexdigest()
    assert harness.client.submit(digest, blob).result(timeout=WAIT_SECONDS) == expected
    key = f"objects/{hashlib.sha256(cloudpickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()}"
    assert harness.stored_object_exists(key)
    harness.put_stored_object(key, b"overwritten by someone with write access")
    with pytest.raises(PayloadError, match="does not match the SHA-256"):
        harness.client.submit(digest, blob).result(timeout=WAIT_SECONDS)
    # The adapter learnt from the signed failure that the object is bad and uploads it again for the next task.
    assert harness.client.submit(digest, blob).result(timeout=WAIT_SECONDS) == expected


@pytest.mark.parametrize(
    ("capabilities", "message"),
    [
        ({"vcpus": -2}, "vcpus=-2 is impossible"),
        ({"memory": 0}, "memory=0 is impossible"),
        ({"timeout": 0}, "timeout=0 is impossible"),
    ],
)
def test_impossible_capability_fails_the_task_and_the_adapter_keeps_serving(
    harness: Harness, capabilities: dict[str, int], message: str
) -> None:
    future = harness.client.submit_verbose(math.sqrt, args=(4,), kwargs={}, capabilities=capabilities)
    with pytest.raises(CapabilityError, match=message):
        future.result(timeout=WAIT_SECONDS)
    assert harness.client.submit(math.sqrt, 16).result(timeout=WAIT_SECONDS) == 4.0


# --- bad input -----------------------------------------------------------------------------------------------------


def test_hundred_mebibyte_argument_and_result(harness: Harness) -> None:
    blob = os.urandom(100 * 1024 * 1024)

    def echo_reversed(data: bytes) -> bytes:
        return data[::-1]

    result = harness.client.submit(echo_reversed, blob).result(timeout=WAIT_SECONDS)
    assert len(result) == len(blob) and result == blob[::-1]


def test_unpicklable_exception_keeps_its_type_name_and_message(harness: Harness) -> None:
    def raise_unpicklable() -> None:
        import threading

        class LockedError(Exception):
            def __init__(self) -> None:
                super().__init__("held a lock")
                self.lock = threading.Lock()

        raise LockedError()

    with pytest.raises(UnpicklableExceptionError, match=r"LockedError: held a lock") as caught:
        harness.client.submit(raise_unpicklable).result(timeout=WAIT_SECONDS)
    assert "could not be pickled" in str(caught.value)


@pytest.mark.job_processes
def test_sys_exit_in_a_task_is_a_job_failure_with_its_code(harness: Harness) -> None:
    def leave() -> None:
        import sys

        sys.exit(3)

    with pytest.raises(JobFailedError) as caught:
        harness.client.submit(leave).result(timeout=WAIT_SECONDS)
    assert caught.value.exit_code == 3 and "exit code 3" in str(caught.value)


@pytest.mark.job_processes
def test_segfault_is_a_job_failure_with_signal_exit_code(harness: Harness) -> None:
    def crash() -> None:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV

    with pytest.raises(JobFailedError) as caught:
        harness.client.submit(crash).result(timeout=WAIT_SECONDS)
    assert caught.value.exit_code == 139, str(caught.value)


@pytest.mark.job_processes
def test_ten_megabytes_on_stdout_do_not_disturb_the_result(harness: Harness) -> None:
    def chatty() -> int:
        import sys

        line = "x" * 1023 + "\n"
        for _ in range(10 * 1024):
            sys.stdout.write(line)
        sys.stdout.flush()
        return 42

    assert harness.client.submit(chatty).result(timeout=WAIT_SECONDS) == 42
