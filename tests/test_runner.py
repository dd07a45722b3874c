"""The runner called as ``main(argv, env)``, with payloads built by the same wire module the adapter uses."""

from __future__ import annotations

import base64
import importlib
import pathlib
import pickle
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import cloudpickle
import pytest
from scaler.client.serializer.default import DefaultSerializer

from scaler_aws_batch import job_parameter, runner, wire
from scaler_aws_batch.contracts import SIGNING_KEY_FILE_ENV
from scaler_aws_batch.errors import (
    CloudpickleVersionMismatchError,
    PayloadError,
    PythonVersionMismatchError,
    ResultRejectedError,
    ResultSerializationError,
)
from scaler_aws_batch.local_code import LocalCodeSerializer
from scaler_aws_batch.signing import KeyRing, ensure_key_file
from scaler_aws_batch.stores.local import LocalDirectoryStore

SERIALIZER = cloudpickle.dumps(DefaultSerializer())
#: The key ring of the job under test (a fresh 0600 key file per test) and the environment that names it.
KEYS: KeyRing
JOB_ENV: dict[str, str]


@pytest.fixture(autouse=True)
def _job_key(tmp_path: pathlib.Path) -> None:
    global KEYS, JOB_ENV
    key_file = tmp_path / "signing.key"
    KEYS = ensure_key_file(key_file)
    JOB_ENV = {SIGNING_KEY_FILE_ENV: str(key_file)}


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
        nonce="nonce-1",
        keys=KEYS,
    )


def _run(parameter: str, job_id: str = "job-1", attempt: int = 1) -> int:
    env = {**JOB_ENV, "AWS_BATCH_JOB_ID": job_id, "AWS_BATCH_JOB_ATTEMPT": str(attempt)}
    return runner.main(["--payload", parameter], env)


def _result(store: LocalDirectoryStore, task_id: str) -> wire.TaskResultEnvelope:
    data = store.get(wire.result_key(task_id))
    return wire.decode_result(data, KEYS, expected_task_id=task_id, expected_nonce="nonce-1")


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LocalDirectoryStore:
    return LocalDirectoryStore(tmp_path / "store")


def test_success_result_is_the_client_serializer_bytes(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda a, b: a + b, 2, 3))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    result = _result(store, "t1")
    assert result.status == "success" and DefaultSerializer.deserialize(result.body) == 5
    assert result.job_id == "job-1" and result.attempt == 1


def test_task_exception_is_a_failure_result_in_scalers_format(store: LocalDirectoryStore) -> None:
    def explode() -> None:
        raise KeyError("missing-key")

    builder = _builder(store)
    builder.add_task(_blobs("t1", explode))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
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
    assert _run(job_parameter.inline_parameter(bytes(envelope))) == runner.EXIT_BAD_PAYLOAD
    message = capsys.readouterr().err
    assert "version 99 is not supported" in message and "rebuild the job image" in message


def test_tampered_stored_payload_is_refused(store: LocalDirectoryStore, capsys: Any) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    envelope = builder.encode()
    store.put("payloads/p1", envelope)
    parameter = job_parameter.ref_parameter(envelope, "payloads/p1", store.url)
    store.put("payloads/p1", envelope.replace(b'"t1"', b'"t2"'))  # someone edits the object after submission
    assert _run(parameter) == runner.EXIT_PAYLOAD_REPLACED
    assert "does not match the SHA-256 in the job's parameters" in capsys.readouterr().err
    assert not store.exists(wire.result_key("t1")) and not store.exists(wire.result_key("t2"))


def test_tampered_stored_argument_fails_the_task_with_a_clear_error(store: LocalDirectoryStore) -> None:
    builder = _builder(store, threshold=64)
    builder.add_task(_blobs("t1", len, b"x" * 1000))
    for key, data in builder.stored_blobs.items():
        store.put(key, data[:-1] + b"!")  # corrupted in the store
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, PayloadError) and "does not match the SHA-256" in str(error)


def test_python_version_mismatch_is_a_failure_that_says_what_to_fix(store: LocalDirectoryStore) -> None:
    builder = _builder(store, python="2.7")
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, PythonVersionMismatchError)
    assert "Python 2.7" in str(error) and "python_version=2.7" in str(error)


def test_cloudpickle_major_mismatch_names_both_versions_and_the_fix(store: LocalDirectoryStore) -> None:
    ours = cloudpickle.__version__
    theirs = f"{int(ours.split('.')[0]) - 1}.2.0"
    builder = _builder(store, cloudpickle_version=theirs)
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, CloudpickleVersionMismatchError)
    message = str(error)
    assert f"cloudpickle {theirs}" in message and f"cloudpickle {ours}" in message
    assert f"cloudpickle=={theirs.split('.')[0]}.*" in message and "requirements_file" in message


def test_same_cloudpickle_major_with_another_minor_runs(store: LocalDirectoryStore) -> None:
    major = cloudpickle.__version__.split(".")[0]
    builder = _builder(store, cloudpickle_version=f"{major}.999.0")
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    result = _result(store, "t1")
    assert result.status == "success" and DefaultSerializer.deserialize(result.body) == 1


def test_unpicklable_result_is_a_clear_failure(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda: threading.Lock()))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
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
    parameter = job_parameter.inline_parameter(builder.encode())
    assert _run(parameter, attempt=1) == runner.EXIT_OK
    assert _run(parameter, attempt=2) == runner.EXIT_OK  # Batch may run a job again (Spot reclaim)
    result = _result(store, "t1")
    assert DefaultSerializer.deserialize(result.body) == 1 and result.attempt == 1


def test_array_child_runs_only_its_own_task(store: LocalDirectoryStore) -> None:
    builder = _builder(store)
    for index in range(3):
        builder.add_task(_blobs(f"t{index}", lambda x: x * 10, index))
    parameter = job_parameter.inline_parameter(builder.encode())
    env = {**JOB_ENV, "AWS_BATCH_JOB_ID": "parent:1", "AWS_BATCH_JOB_ARRAY_INDEX": "1"}
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
    parameter = job_parameter.inline_parameter(builder.encode())
    (locked / "results").write_text("a file where the results directory should be")
    assert _run(parameter) == runner.EXIT_STORE


def test_runner_output_never_contains_argument_or_result_values(store: LocalDirectoryStore, capsys: Any) -> None:
    secret = "SECRET-VALUE-93b1"
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda s: s + "!", secret))
    builder.add_task(_blobs("t2", lambda s: (_ for _ in ()).throw(ValueError(s)), secret))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    output = capsys.readouterr()
    assert secret not in output.err and secret not in output.out
    assert "task t1: success" in output.err and "task t2: failure" in output.err


class _Marker:
    """Unpickling this creates a file: the proof that forged bytes were loaded."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.path,))


def _forged_builder(store: LocalDirectoryStore, marker: pathlib.Path, keys: KeyRing) -> wire.PayloadBuilder:
    builder = wire.PayloadBuilder(
        python=wire.python_version_tag(), cloudpickle_version=cloudpickle.__version__, result_store=store.url,
        store_threshold=1 << 40, nonce="forged", keys=keys,
    )  # fmt: skip
    marker_bytes = pickle.dumps(_Marker(marker))
    builder.add_task(wire.TaskBlobs(task_id="t1", serializer=marker_bytes, function=marker_bytes, arguments=()))
    return builder


def test_payload_signed_with_another_key_is_refused_before_anything_is_unpickled(
    store: LocalDirectoryStore, tmp_path: pathlib.Path, capsys: Any
) -> None:
    marker = tmp_path / "forged-payload-ran"
    forger = KeyRing((b"f" * 64,))
    assert (
        _run(job_parameter.inline_parameter(_forged_builder(store, marker, forger).encode())) == runner.EXIT_BAD_PAYLOAD
    )
    assert "unsigned or its signature does not match" in capsys.readouterr().err
    assert not marker.exists(), "the forged payload's pickle was loaded"
    assert not store.exists(wire.result_key("t1"))


def test_unsigned_and_tampered_payloads_are_refused(store: LocalDirectoryStore, tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "tampered-payload-ran"
    envelope = _forged_builder(store, marker, KEYS).encode()
    unsigned = envelope[: -len(KEYS.sign(b""))]
    assert _run(job_parameter.inline_parameter(unsigned)) == runner.EXIT_BAD_PAYLOAD
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    genuine = builder.encode()
    tampered = genuine.replace(b'"nonce-1"', b'"nonce-2"')  # same length, one field changed after signing
    assert tampered != genuine
    assert _run(job_parameter.inline_parameter(tampered)) == runner.EXIT_BAD_PAYLOAD
    assert not marker.exists() and not store.exists(wire.result_key("t1"))
    assert _run(job_parameter.inline_parameter(genuine)) == runner.EXIT_OK  # the untouched payload runs


def test_result_planted_before_the_job_ran_is_replaced_by_the_real_one(
    store: LocalDirectoryStore, tmp_path: pathlib.Path
) -> None:
    calls = tmp_path / "calls"
    builder = _builder(store)
    builder.add_task(_blobs("t1", lambda path: open(path, "a").write("x"), str(calls)))
    planted_by_a_forger = wire.TaskResultEnvelope(task_id="t1", status="success", body=b"forged", nonce="nonce-1")
    store.put(wire.result_key("t1"), planted_by_a_forger.encode(KeyRing((b"f" * 64,))))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    assert calls.read_text() == "x", "the task was skipped because of the planted result"
    assert DefaultSerializer.deserialize(_result(store, "t1").body) == 1
    # A genuinely signed result of an earlier submission (another nonce) is not taken as this one's either.
    earlier = wire.TaskResultEnvelope(task_id="t1", status="success", body=b"stale", nonce="old-nonce")
    store.put(wire.result_key("t1"), earlier.encode(KEYS))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    assert calls.read_text() == "xx" and DefaultSerializer.deserialize(_result(store, "t1").body) == 1


def test_job_without_a_signing_key_refuses_to_run(store: LocalDirectoryStore, capsys: Any) -> None:
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    assert runner.main(["--payload", job_parameter.inline_parameter(builder.encode())], {}) == runner.EXIT_BAD_PAYLOAD
    assert "SCALER_BATCH_SIGNING_SECRET" in capsys.readouterr().err
    assert not store.exists(wire.result_key("t1"))


def test_key_file_readable_by_others_is_refused(store: LocalDirectoryStore, capsys: Any) -> None:
    key_file = pathlib.Path(JOB_ENV[SIGNING_KEY_FILE_ENV])
    key_file.chmod(0o644)
    builder = _builder(store)
    builder.add_task(_blobs("t1", abs, -1))
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_BAD_PAYLOAD
    assert f"chmod 600 {key_file}" in capsys.readouterr().err


def test_empty_foreign_and_unsigned_results_are_refused_without_unpickling() -> None:
    genuine = wire.TaskResultEnvelope(task_id="t1", status="success", body=b"body", nonce="n1")
    checks = {
        b"": "too short to be a result",
        genuine.encode(KEYS)[:-1] + b"!": "signature does not match",
        wire.TaskResultEnvelope(task_id="t2", status="success", body=b"b", nonce="n1").encode(KEYS): "holds the result",
        wire.TaskResultEnvelope(task_id="t1", status="success", body=b"b", nonce="n0").encode(KEYS): "not written by",
    }
    for data, message in checks.items():
        with pytest.raises(ResultRejectedError, match=message):
            wire.decode_result(data, KEYS, expected_task_id="t1", expected_nonce="n1")
    assert wire.decode_result(genuine.encode(KEYS), KEYS, expected_task_id="t1", expected_nonce="n1").body == b"body"


# --- modules the image lacks ---------------------------------------------------------------------------------------


@pytest.fixture
def vanishing_module(tmp_path: pathlib.Path) -> Iterator[Callable[[str, str], ModuleType]]:
    """Imports a module written to a temporary directory; after the test, neither it nor its directory is left."""
    made: list[tuple[str, str]] = []

    def make(name: str, source: str) -> ModuleType:
        directory = tmp_path / f"client-{name}"
        directory.mkdir()
        (directory / f"{name}.py").write_text(source)
        sys.path.insert(0, str(directory))
        made.append((name, str(directory)))
        return importlib.import_module(name)

    yield make
    for name, directory in made:
        _forget(name, directory)


def _forget(name: str, directory: str) -> None:
    """This process (where the runner runs) can no longer import the module: as in an image without it."""
    if directory in sys.path:
        sys.path.remove(directory)
    sys.modules.pop(name, None)


def _forget_module(module: ModuleType) -> None:
    _forget(module.__name__, str(pathlib.Path(str(module.__file__)).parent))


def test_function_from_a_module_the_image_lacks_says_to_ship_it_or_install_it(
    store: LocalDirectoryStore, vanishing_module: Callable[[str, str], ModuleType]
) -> None:
    mylib = vanishing_module("clientonly_lib", "def double(x):\n    return 2 * x\n")
    builder = _builder(store)
    builder.add_task(_blobs("t1", mylib.double, 4))  # pickled by reference, as Scaler's default serializer does
    _forget_module(mylib)
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert type(error) is ModuleNotFoundError and error.name == "clientonly_lib"
    message = str(error)
    assert "No module named 'clientonly_lib'" in message and "from scaler_aws_batch import Client" in message
    assert "LocalCodeSerializer" in message and "requirements_file" in message and "Compiled extension" in message


def test_local_code_serializer_ships_the_module_and_names_its_directories_when_it_did_not(
    store: LocalDirectoryStore, vanishing_module: Callable[[str, str], ModuleType], tmp_path: pathlib.Path
) -> None:
    shipped = vanishing_module("clientonly_shipped", "def triple(x):\n    return 3 * x\n")
    not_shipped = vanishing_module("clientonly_elsewhere", "def negate(x):\n    return -x\n")
    serializer = LocalCodeSerializer(directories=[pathlib.Path(str(shipped.__file__)).parent])
    builder = _builder(store)
    for task_id, function in (("t1", shipped.triple), ("t2", not_shipped.negate)):
        blobs = wire.TaskBlobs(task_id, cloudpickle.dumps(serializer), serializer.serialize(function),
                               (serializer.serialize(5),))  # fmt: skip
        builder.add_task(blobs)
    cloudpickle.unregister_pickle_by_value(shipped)
    for module in (shipped, not_shipped):
        _forget_module(module)
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    assert DefaultSerializer.deserialize(_result(store, "t1").body) == 15
    error = pickle.loads(_result(store, "t2").body)
    assert type(error) is ModuleNotFoundError and error.name == "clientonly_elsewhere"
    assert "did not ship it" in str(error) and serializer.directories[0] in str(error)


def test_serializer_from_a_module_the_image_lacks_names_the_module(
    store: LocalDirectoryStore, vanishing_module: Callable[[str, str], ModuleType]
) -> None:
    module = vanishing_module("clientonly_serializer", "from cloudpickle import dumps, loads\nclass Plain:\n    pass\n")
    builder = _builder(store)
    builder.add_task(wire.TaskBlobs("t1", pickle.dumps(module.Plain()), DefaultSerializer.serialize(abs), ()))
    _forget_module(module)
    assert _run(job_parameter.inline_parameter(builder.encode())) == runner.EXIT_OK
    error = pickle.loads(_result(store, "t1").body)
    assert isinstance(error, PayloadError)
    assert "no module 'clientonly_serializer'" in str(error) and "job image must have it" in str(error)
