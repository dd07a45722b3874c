"""The runner called as ``main(argv, env)``, with payloads built by the same wire module the adapter uses."""

from __future__ import annotations

import base64
import pathlib
import pickle
import struct
import threading
from typing import Any

import cloudpickle
import pytest
from scaler.client.serializer.default import DefaultSerializer

from scaler_aws_batch import runner, wire
from scaler_aws_batch.errors import (
    CloudpickleVersionMismatchError,
    PayloadError,
    PythonVersionMismatchError,
    ResultSerializationError,
)
from scaler_aws_batch.stores.local import LocalDirectoryStore

SERIALIZER = cloudpickle.dumps(DefaultSerializer())


def _blobs(task_id: str, function: Any, *arguments: Any) -> wire.TaskBlobs:
    return wire.TaskBlobs(
        task_id=task_id,
        serializer=SERIALIZER,
        function=DefaultSerializer.serialize(function),
        arguments=tuple(DefaultSerializer.serialize(argument) for argument in arguments),
    )


def _builder(
    store: LocalDirectoryStore,
    *,
    python: str | None = None,
    cloudpickle_version: str | None = None,
    threshold: int = 1 << 40,
) -> wire.PayloadBuilder:
    return wire.PayloadBuilder(
        python=python or wire.python_version_tag(),
        cloudpickle_version=cloudpickle_version or cloudpickle.__version__,
        result_store=store.url,
        store_threshold=threshold,
    )


def _run(parameter: str, job_id: str = "job-1", attempt: int = 1) -> int:
    return runner.main(["--payload", parameter], {"AWS_BATCH_JOB_ID": job_id, "AWS_BATCH_JOB_ATTEMPT": str(attempt)})


def _result(store: LocalDirectoryStore, task_id: str) -> wire.TaskResultEnvelope:
    return wire.decode_result(store.get(wire.result_key(task_id)), expected_task_id=task_id)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LocalDirectoryStore:
    return LocalDirectoryStore(tmp_path / "store")


def test_success_result_is_the_client_serializer_bytes(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda a, b: a + b, 2, 3))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    result = _result(store, "t1")
    assert result.status == "success" and DefaultSerializer.deserialize(result.body) == 5
    assert result.job_id == "job-1" and result.attempt == 1


def test_task_exception_is_a_failure_result_in_scalers_format(store: LocalDirectoryStore) -> None:
    def explode() -> None:
        raise KeyError("missing-key")

    builder = _builder(store)
    builder.add_task(_blobs("t1", explode))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    result = _result(store, "t1")
    error = pickle.loads(result.body)
    assert result.status == "failure" and isinstance(error, KeyError) and error.args == ("missing-key",)
    assert error.__traceback__ is not None, "tblib carries the traceback along"


def test_corrupt_inline_payload_exits_with_a_clear_message(store: LocalDirectoryStore, capsys: Any) -> None:
    assert _run("inline:!!!not-base64!!!") == runner.EXIT_BAD_PAYLOAD
    assert "corrupt payload" in capsys.readouterr().err
    assert _run("inline:" + base64.b64encode(b"SCBJ\x00").decode()) == runner.EXIT_BAD_PAYLOAD
    assert _run("mystery:abc") == runner.EXIT_BAD_PAYLOAD


def test_unknown_payload_version_is_refused(store: LocalDirectoryStore, capsys: Any) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    envelope = bytearray(builder.encode())
    struct.pack_into("!H", envelope, 4, 99)
    assert _run(wire.inline_parameter(bytes(envelope))) == runner.EXIT_BAD_PAYLOAD
    message = capsys.readouterr().err
    assert "version 99 is not supported" in message and "rebuild the job image" in message


def test_tampered_stored_payload_is_refused(store: LocalDirectoryStore, capsys: Any) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    envelope = builder.encode()
    store.put("payloads/p1", envelope)
    parameter = wire.ref_parameter(envelope, "payloads/p1", store.url)
    store.put("payloads/p1", envelope.replace(b'"t1"', b'"t2"'))  # someone edits the object after submission
    assert _run(parameter) == runner.EXIT_BAD_PAYLOAD
    assert "modified or corrupted" in capsys.readouterr().err
    assert not store.exists(wire.result_key("t1")) and not store.exists(wire.result_key("t2"))


def test_tampered_stored_argument_fails_the_task_with_a_clear_error(store: LocalDirectoryStore) -> None:
    builder = _builder(store, threshold=64)
    builder.add_task(_blobs("t1", len, b"x" * 1000))
    for key, data in builder.stored_blobs.items():
        store.put(key, data[:-1] + b"!")  # corrupted in the store
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, PayloadError) and "does not match the SHA-256" in str(error)


def test_python_version_mismatch_is_a_failure_that_says_what_to_fix(store: LocalDirectoryStore) -> None:
    builder = _builder(store, python="2.7")
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, PythonVersionMismatchError)
    assert "Python 2.7" in str(error) and "python_version=2.7" in str(error)


def test_cloudpickle_major_mismatch_names_both_versions_and_the_fix(store: LocalDirectoryStore) -> None:
    ours = cloudpickle.__version__
    theirs = f"{int(ours.split('.')[0]) - 1}.2.0"
    builder = _builder(store, cloudpickle_version=theirs)
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, CloudpickleVersionMismatchError)
    message = str(error)
    assert f"cloudpickle {theirs}" in message and f"cloudpickle {ours}" in message
    assert f"cloudpickle=={theirs.split('.')[0]}.*" in message and "requirements_file" in message


def test_same_cloudpickle_major_with_another_minor_runs(store: LocalDirectoryStore) -> None:
    major = cloudpickle.__version__.split(".")[0]
    builder = _builder(store, cloudpickle_version=f"{major}.999.0")
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    result = _result(store, "t1")
    assert result.status == "success" and DefaultSerializer.deserialize(result.body) == 1


def test_unpicklable_result_is_a_clear_failure(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda: threading.Lock()))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, ResultSerializationError) and "lock" in str(error).lower()


def test_a_second_attempt_keeps_the_first_result(store: LocalDirectoryStore) -> None:
    counter = store.url.removeprefix("file://") + "/calls"

    def count_calls(path: str) -> int:
        with open(path, "a") as handle:
            handle.write("x")
        with open(path) as handle:
            return len(handle.read())

    builder = _builder(store)
    builder.add_task(_blobs("t1", count_calls, counter))
    parameter = wire.inline_parameter(builder.encode())
    assert _run(parameter, attempt=1) == runner.EXIT_OK
    assert _run(parameter, attempt=2) == runner.EXIT_OK  # Batch may run a job again (Spot reclaim)
    result = _result(store, "t1")
    assert DefaultSerializer.deserialize(result.body) == 1 and result.attempt == 1


def test_array_child_runs_only_its_own_task(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    for index in range(3):
        builder.add_task(_blobs(f"t{index}", lambda x: x * 10, index))
    parameter = wire.inline_parameter(builder.encode())
    env = {"AWS_BATCH_JOB_ID": "parent:1", "AWS_BATCH_JOB_ARRAY_INDEX": "1"}
    assert runner.main(["--payload", parameter], env) == runner.EXIT_OK
    assert DefaultSerializer.deserialize(_result(store, "t1").body) == 10
    assert not store.exists(wire.result_key("t0")) and not store.exists(wire.result_key("t2"))
    env["AWS_BATCH_JOB_ARRAY_INDEX"] = "7"
    assert runner.main(["--payload", parameter], env) == runner.EXIT_BAD_PAYLOAD


def test_unwritable_result_store_is_an_infrastructure_failure(tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    store = LocalDirectoryStore(locked)
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    parameter = wire.inline_parameter(builder.encode())
    (locked / "results").write_text("a file where the results directory should be")
    assert _run(parameter) == runner.EXIT_STORE


def test_runner_output_never_contains_argument_or_result_values(store: LocalDirectoryStore, capsys: Any) -> None:
    secret = "SECRET-VALUE-93b1"
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda s: s + "!", secret))
    builder.add_task(_blobs("t2", lambda s: (_ for _ in ()).throw(ValueError(s)), secret))
    assert _run(wire.inline_parameter(builder.encode())) == runner.EXIT_OK
    output = capsys.readouterr()
    assert secret not in output.err and secret not in output.out
    assert "task t1: success" in output.err and "task t2: failure" in output.err
