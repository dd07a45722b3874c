"""Stored array payloads (format 3): each child runs its own task after reading a bounded part of the payload, and
refuses a section that was forged, moved to another index or spliced in from another payload, before unpickling."""

from __future__ import annotations

import json
import pathlib
import pickle
import struct
from typing import Any

import cloudpickle
import pytest
from scaler.client.serializer.default import DefaultSerializer

from scaler_aws_batch import job_parameter, runner, wire
from scaler_aws_batch.contracts import SIGNING_KEY_FILE_ENV
from scaler_aws_batch.errors import PayloadError, PayloadReplacedError, PayloadSignatureError
from scaler_aws_batch.indexed_payload import (
    FIRST_READ_BYTES,
    encode_indexed_payload,
    indexed_header_sha256,
    read_indexed_entry,
)
from scaler_aws_batch.reattach import payload_task_ids
from scaler_aws_batch.signing import SIGNATURE_BYTES, KeyRing, ensure_key_file
from scaler_aws_batch.stores.local import LocalDirectoryStore

SERIALIZER = cloudpickle.dumps(DefaultSerializer())
KEY = "payloads/array"


class _Marker:
    """Unpickling this creates a file: the proof that forged bytes were loaded."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def store(tmp_path: pathlib.Path) -> LocalDirectoryStore:
    return LocalDirectoryStore(tmp_path / "store")


@pytest.fixture
def key_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "signing.key"
    ensure_key_file(path)
    return path


def _keys(key_file: pathlib.Path) -> KeyRing:
    return ensure_key_file(key_file)


def _tasks(count: int, function: Any = lambda x: x * 10, prefix: str = "t") -> list[wire.TaskBlobs]:
    serialized = DefaultSerializer.serialize(function)
    return [
        wire.TaskBlobs(f"{prefix}{index}", SERIALIZER, serialized, (DefaultSerializer.serialize(index),))
        for index in range(count)
    ]


def _encode(
    tasks: list[wire.TaskBlobs], store: LocalDirectoryStore, keys: KeyRing, nonce: str = "nonce-1"
) -> tuple[bytes, dict[str, bytes]]:
    return encode_indexed_payload(
        tasks, python=wire.python_version_tag(), cloudpickle_version=cloudpickle.__version__, result_store=store.url,
        store_threshold=2048, nonce=nonce, keys=keys,
    )  # fmt: skip


class _CountingReads:
    """A range reader over stored bytes that records how many bytes each read asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[int] = []

    def first(self) -> bytes:
        self.reads.append(min(len(self.data), FIRST_READ_BYTES))
        return self.data[:FIRST_READ_BYTES]

    def __call__(self, start: int, end: int) -> bytes:
        self.reads.append(end - start)
        return self.data[start:end]


def _read(
    data: bytes, index: int, keys: KeyRing, submitted: bytes | None = None
) -> tuple[wire.Payload, _CountingReads]:
    """Child ``index``'s payload read from ``data``; ``submitted``: the envelope the job parameter names (``data``
    unless it was replaced)."""
    reads = _CountingReads(data)
    digest = indexed_header_sha256(submitted if submitted is not None else data)
    return read_indexed_entry(reads.first(), len(data), reads, index, keys, header_sha256=digest), reads


def _run_child(parameter: str, index: int, key_file: pathlib.Path) -> int:
    env = {SIGNING_KEY_FILE_ENV: str(key_file), "AWS_BATCH_JOB_ID": "array:1", "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
    return runner.main(["--payload", parameter], env)


def test_each_child_of_a_stored_array_runs_only_its_own_task(
    store: LocalDirectoryStore, key_file: pathlib.Path
) -> None:
    keys = _keys(key_file)
    envelope, stored = _encode(_tasks(500), store, keys)
    assert stored == {}  # small blobs: everything is in the payload
    store.put(KEY, envelope)
    parameter = job_parameter.indexed_parameter(envelope, KEY, store.url)
    for index in (0, 1, 250, 499):
        assert _run_child(parameter, index, key_file) == runner.EXIT_OK
    for index in (0, 1, 250, 499):
        data = store.get(wire.result_key(f"t{index}"))
        result = wire.decode_result(data, keys, expected_task_id=f"t{index}", expected_nonce="nonce-1")
        assert DefaultSerializer.deserialize(result.body) == index * 10
    assert not store.exists(wire.result_key("t2"))
    assert _run_child(parameter, 500, key_file) == runner.EXIT_BAD_PAYLOAD  # past the end of the array


def test_what_a_child_reads_does_not_grow_with_the_array(store: LocalDirectoryStore, key_file: pathlib.Path) -> None:
    keys = _keys(key_file)
    small, _ = _encode(_tasks(10), store, keys)
    large, _ = _encode(_tasks(10_000), store, keys)
    assert len(large) > 10 * FIRST_READ_BYTES  # a payload no child should download whole
    for index in (0, 5_000, 9_999):
        payload, reads = _read(large, index, keys)
        assert [task.task_id for task in payload.tasks] == [f"t{index}"]
        assert len(reads.reads) <= 4  # the first read, then its index entries, its section and the shared blobs
        assert sum(reads.reads) <= FIRST_READ_BYTES + 1024
    payload, reads = _read(small, 9, keys)
    assert reads.reads == [len(small)]  # a small array is read in one request


def test_a_function_shared_by_every_task_is_stored_once(store: LocalDirectoryStore, key_file: pathlib.Path) -> None:
    keys = _keys(key_file)
    padding = "x" * 1000  # under the store threshold, so it stays in the payload

    def function(x: int) -> str:
        return padding + str(x)

    envelope, _ = _encode(_tasks(1000, function), store, keys)
    assert len(envelope) < 1000 * 1000  # 1,000 copies of the 1.3 KB function would not fit
    payload, _ = _read(envelope, 999, keys)
    (entry,) = payload.tasks
    assert DefaultSerializer.deserialize(payload.inline_blob(entry.function))(3) == padding + "3"
    assert DefaultSerializer.deserialize(payload.inline_blob(entry.arguments[0])) == 999


def _layout(envelope: bytes) -> tuple[int, int]:
    """Where the index and the sections start (the layout the module docstring gives)."""
    header_length = struct.unpack_from("!I", envelope, 6)[0]
    header = json.loads(envelope[10 : 10 + header_length])
    index_start = 10 + header_length + SIGNATURE_BYTES + header["shared_size"]
    return index_start, index_start + 8 * (header["count"] + 1)


def _section_bounds(envelope: bytes, index: int) -> tuple[int, int]:
    index_start, sections_start = _layout(envelope)
    start, end = struct.unpack_from("!QQ", envelope, index_start + 8 * index)
    return sections_start + start, sections_start + end


def test_forged_moved_and_spliced_sections_are_refused_before_anything_is_unpickled(
    store: LocalDirectoryStore, key_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    keys = _keys(key_file)
    marker = tmp_path / "forged-section-ran"
    marker_bytes = pickle.dumps(_Marker(marker))
    genuine, _ = _encode(_tasks(3), store, keys)

    # A section whose function blob was replaced by a writer without the key.
    forger = KeyRing((b"f" * 64,))
    forged_tasks = [wire.TaskBlobs("t1", marker_bytes, marker_bytes, ())] * 3
    forged, _ = _encode(forged_tasks, store, forger)
    with pytest.raises(PayloadSignatureError, match="header is unsigned"):
        _read(forged, 1, keys)

    # Another genuine payload's section spliced in at the same index (same key, other header).
    other, _ = _encode(_tasks(3, prefix="o"), store, keys, nonce="nonce-2")
    start, end = _section_bounds(genuine, 1)
    other_start, other_end = _section_bounds(other, 1)
    assert end - start == other_end - other_start
    spliced = genuine[:start] + other[other_start:other_end] + genuine[end:]
    with pytest.raises(PayloadSignatureError, match="another index or another payload"):
        _read(spliced, 1, keys)

    # The index pointed at another task's section.
    index_start, _ = _layout(genuine)
    entries = struct.unpack_from("!QQQQ", genuine, index_start)
    moved = bytearray(genuine)
    struct.pack_into("!QQ", moved, index_start + 8 * 1, entries[2], entries[3])
    with pytest.raises(PayloadSignatureError, match="another index"):
        _read(bytes(moved), 1, keys)

    # One byte of a section changed after signing.
    flipped = bytearray(genuine)
    flipped[end - SIGNATURE_BYTES - 1] ^= 1
    with pytest.raises(PayloadSignatureError):
        _read(bytes(flipped), 1, keys)

    # Through the runner: refused with its exit code, no result written, nothing unpickled.
    store.put(KEY, forged)
    assert _run_child(job_parameter.indexed_parameter(forged, KEY, store.url), 1, key_file) == runner.EXIT_BAD_PAYLOAD
    assert not marker.exists(), "a forged section was unpickled"
    assert not store.exists(wire.result_key("t1"))


def test_an_indexed_payload_outside_an_array_is_refused(store: LocalDirectoryStore, key_file: pathlib.Path) -> None:
    envelope, _ = _encode(_tasks(2), store, _keys(key_file))
    store.put(KEY, envelope)
    env = {SIGNING_KEY_FILE_ENV: str(key_file), "AWS_BATCH_JOB_ID": "single"}
    parameter = job_parameter.indexed_parameter(envelope, KEY, store.url)
    assert runner.main(["--payload", parameter], env) == runner.EXIT_BAD_PAYLOAD
    with pytest.raises(PayloadError, match="outside the stored payload"):
        read_indexed_entry(
            envelope[:100], 100, lambda start, end: envelope[start:end], 1, _keys(key_file),
            header_sha256=indexed_header_sha256(envelope),
        )  # fmt: skip


def test_a_restarted_adapter_reads_every_task_id_of_an_indexed_payload(
    store: LocalDirectoryStore, key_file: pathlib.Path
) -> None:
    keys = _keys(key_file)
    envelope, _ = _encode(_tasks(300), store, keys)
    store.put(KEY, envelope)
    parameter = job_parameter.indexed_parameter(envelope, KEY, store.url)
    assert payload_task_ids(parameter, store.get, keys) == tuple(f"t{index}" for index in range(300))
    start, _ = _section_bounds(envelope, 123)
    tampered = bytearray(envelope)
    tampered[start + 10] ^= 1
    store.put(KEY, bytes(tampered))
    with pytest.raises(PayloadSignatureError, match="section of task 123"):
        payload_task_ids(parameter, store.get, keys)


class _NoSectionReads(_CountingReads):
    """A range reader that fails the test if anything past the first read (a section, the index) is asked for."""

    def __call__(self, start: int, end: int) -> bytes:
        raise AssertionError(f"bytes {start}-{end} were read from a replaced payload")


def test_a_replayed_genuine_payload_is_refused_before_any_section_is_read(
    store: LocalDirectoryStore, key_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Someone with write access to the bucket (but not the key) puts an earlier genuine payload of the same
    deployment under a pending array's key: every child refuses it, runs nothing and says it was replaced."""
    keys = _keys(key_file)
    marker = tmp_path / "earlier-task-ran"
    earlier, _ = _encode(_tasks(3, function=lambda x: marker.touch(), prefix="e"), store, keys, nonce="nonce-e")
    submitted, _ = _encode(_tasks(3, prefix="s"), store, keys, nonce="nonce-s")
    # Same task count and layout, both correctly signed: only the header digest tells them apart.
    reads = _NoSectionReads(earlier)
    with pytest.raises(PayloadReplacedError, match="replaced it after submission"):
        read_indexed_entry(
            earlier[:200], len(earlier), reads, 0, keys, header_sha256=indexed_header_sha256(submitted)
        )  # the header fits in the first 200 bytes: no other read happens
    with pytest.raises(PayloadReplacedError):
        _read(earlier, 1, keys, submitted=submitted)

    store.put(KEY, earlier)
    parameter = job_parameter.indexed_parameter(submitted, KEY, store.url)
    for index in range(3):
        assert _run_child(parameter, index, key_file) == runner.EXIT_PAYLOAD_REPLACED
    assert not marker.exists(), "an earlier task ran again"
    assert store.list_keys(wire.RESULTS_PREFIX) == set()
    # A restarted adapter does not adopt the replayed payload's task table either.
    with pytest.raises(PayloadReplacedError):
        payload_task_ids(parameter, store.get, keys)


def test_the_indexed_parameter_carries_the_header_digest(store: LocalDirectoryStore, key_file: pathlib.Path) -> None:
    envelope, _ = _encode(_tasks(2), store, _keys(key_file))
    parameter = job_parameter.indexed_parameter(envelope, KEY, store.url)
    parsed = job_parameter.parse_parameter(parameter)
    assert parsed == job_parameter.IndexedParameter(indexed_header_sha256(envelope), KEY, store.url)
    assert parameter == f"indexed:{indexed_header_sha256(envelope)}:{KEY}:{store.url}"
    # Without the digest (an older adapter's form) or with a malformed one, the parameter is refused.
    for value in (f"indexed:{KEY}:{store.url}", f"indexed:{'G' * 64}:{KEY}:{store.url}", "indexed:" + "a" * 64):
        with pytest.raises(PayloadError, match="indexed:<sha256 of the header>"):
            job_parameter.parse_parameter(value)


def test_a_restarted_adapter_refuses_a_replaced_ref_payload(store: LocalDirectoryStore, key_file: pathlib.Path) -> None:
    """A stored single-job payload (``ref:``) replaced by another genuine one: its task table is not adopted."""
    keys = _keys(key_file)

    def envelope(task_id: str, nonce: str) -> bytes:
        builder = wire.PayloadBuilder(
            python=wire.python_version_tag(), cloudpickle_version=cloudpickle.__version__, result_store=store.url,
            store_threshold=1 << 40, nonce=nonce, keys=keys,
        )  # fmt: skip
        builder.add_task(_tasks(1, prefix=task_id)[0])
        return builder.encode()

    submitted, earlier = envelope("s", "nonce-s"), envelope("e", "nonce-e")
    store.put(KEY, submitted)
    parameter = job_parameter.ref_parameter(submitted, KEY, store.url)
    assert payload_task_ids(parameter, store.get, keys) == ("s0",)
    store.put(KEY, earlier)
    with pytest.raises(PayloadReplacedError, match="replaced or corrupted after submission"):
        payload_task_ids(parameter, store.get, keys)
