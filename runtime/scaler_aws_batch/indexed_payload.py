"""The indexed array payload (format version 3): each array child reads only its own task, with ranged reads.

A format-2 payload (:mod:`scaler_aws_batch.wire`) holds every task's entry in one signed header, so each child of a
10,000-task array would download and parse all 10,000 entries: O(N) per child, O(N^2) for the array. Format 3 is
written for stored array payloads instead::

    b"SCBJ" | version 3: u16 | header length: u32 | header JSON | header signature
    | shared blob area | index: (count + 1) x u64 | entry sections

The header names the Python and cloudpickle versions, the result store, the nonce, the task count and the size of the
shared blob area (blobs used by two or more tasks, such as one function mapped over many arguments). Index entry *i*
is the offset of section *i* from the start of the sections; entry *count* is their total length. Section *i* is::

    entry JSON length: u32 | entry JSON | the task's own blobs | signature

Its signature covers the SHA-256 of the signed header, the index *i* and the section, so a section cannot move to
another index or another payload. The job parameter carries that same SHA-256 (:mod:`scaler_aws_batch.job_parameter`),
so a whole other genuine payload (an earlier array's, put under this key) is refused before any section is read.
A child reads the first :data:`FIRST_READ_BYTES` (header, usually the shared area
and the start of the index), then at most three ranges: its two index entries, its section and the rest of the shared
area. It checks both signatures before it parses what they cover, and each blob against the SHA-256 in its entry.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

from scaler_aws_batch.errors import PayloadError, PayloadReplacedError, PayloadSignatureError
from scaler_aws_batch.signing import SIGNATURE_BYTES, KeyRing
from scaler_aws_batch.wire import (
    PAYLOAD_MAGIC,
    BlobRef,
    Payload,
    TaskBlobs,
    TaskEntry,
    object_key,
    sha256_hex,
)

INDEXED_PAYLOAD_VERSION = 3
#: The first read of a child: the header and, for most arrays, the shared blobs and a part of the index.
FIRST_READ_BYTES = 64 * 1024

_PREFIX = struct.Struct("!4sHI")  # magic, version, header length (as in format 2)
_OFFSET = struct.Struct("!Q")
_SECTION_LENGTH = struct.Struct("!I")
_SECTION_INDEX = struct.Struct("!I")

#: ``read(start, end)``: bytes [start, end) of the stored payload.
RangeReader = Callable[[int, int], bytes]


def encode_indexed_payload(
    tasks: Sequence[TaskBlobs],
    *,
    python: str,
    cloudpickle_version: str,
    result_store: str,
    store_threshold: int,
    nonce: str,
    keys: KeyRing,
) -> tuple[bytes, dict[str, bytes]]:
    """The format-3 envelope of ``tasks`` and the blobs (``objects/<sha256>``) the caller must store first."""
    uses: collections.Counter[str] = collections.Counter()
    for task in tasks:
        uses.update({sha256_hex(blob) for blob in _blobs_of(task)})
    stored: dict[str, bytes] = {}
    shared = bytearray()
    shared_refs: dict[str, BlobRef] = {}
    for task in tasks:
        for blob in _blobs_of(task):
            digest = sha256_hex(blob)
            if digest in shared_refs or len(blob) >= store_threshold or uses[digest] < 2:
                continue
            shared_refs[digest] = BlobRef(sha256=digest, size=len(blob), offset=len(shared))
            shared.extend(blob)
    header = {
        "python": python,
        "cloudpickle": cloudpickle_version,
        "result_store": result_store,
        "nonce": nonce,
        "count": len(tasks),
        "shared_size": len(shared),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    signed_header = _PREFIX.pack(PAYLOAD_MAGIC, INDEXED_PAYLOAD_VERSION, len(header_bytes)) + header_bytes
    header_digest = hashlib.sha256(signed_header).digest()

    sections: list[bytes] = []
    for index, task in enumerate(tasks):
        own = bytearray()
        own_refs: dict[str, BlobRef] = {}

        def place(blob: bytes, own: bytearray = own, own_refs: dict[str, BlobRef] = own_refs) -> BlobRef:
            digest = sha256_hex(blob)
            if len(blob) >= store_threshold:
                key = object_key(digest)
                stored[key] = blob
                return BlobRef(sha256=digest, size=len(blob), key=key)
            ref = shared_refs.get(digest) or own_refs.get(digest)
            if ref is None:  # offsets count from the start of the child's blob area: shared area, then own blobs
                ref = own_refs[digest] = BlobRef(sha256=digest, size=len(blob), offset=len(shared) + len(own))
                own.extend(blob)
            return ref

        entry = TaskEntry(
            task_id=task.task_id,
            serializer=place(task.serializer),
            function=place(task.function),
            arguments=tuple(place(argument) for argument in task.arguments),
        )
        entry_bytes = json.dumps(entry.to_json(), separators=(",", ":")).encode()
        body = _SECTION_LENGTH.pack(len(entry_bytes)) + entry_bytes + bytes(own)
        sections.append(body + keys.sign(header_digest + _SECTION_INDEX.pack(index) + body))

    index_table = bytearray()
    offset = 0
    for section in sections:
        index_table += _OFFSET.pack(offset)
        offset += len(section)
    index_table += _OFFSET.pack(offset)
    envelope = b"".join((signed_header, keys.sign(signed_header), bytes(shared), bytes(index_table), *sections))
    return envelope, stored


def indexed_header_sha256(envelope: bytes) -> str:
    """The SHA-256 (hex) of an indexed envelope's signed header: what its job parameter carries."""
    if not is_indexed(envelope):
        raise ValueError("not an indexed payload")
    _, _, header_length = _PREFIX.unpack_from(envelope)
    return hashlib.sha256(envelope[: _PREFIX.size + header_length]).hexdigest()


def _blobs_of(task: TaskBlobs) -> tuple[bytes, ...]:
    return (task.serializer, task.function, *task.arguments)


class _Ranges:
    """Serves byte ranges from the first read, and reads the others from the store."""

    def __init__(self, first: bytes, total: int, read: RangeReader) -> None:
        self._first = first
        self._total = total
        self._read = read

    def get(self, start: int, end: int) -> bytes:
        if not 0 <= start <= end <= self._total:
            raise PayloadError(
                f"corrupt payload: range {start}-{end} lies outside the stored payload's {self._total} bytes"
            )
        if end <= len(self._first):
            return self._first[start:end]
        data = self._read(start, end)
        if len(data) != end - start:
            raise PayloadError(f"corrupt payload: read {len(data)} bytes of the range {start}-{end}")
        return data


def is_indexed(first: bytes) -> bool:
    """Whether these leading bytes start a format-3 payload."""
    if len(first) < _PREFIX.size:
        return False
    magic, version, _ = _PREFIX.unpack_from(first)
    return bool(magic == PAYLOAD_MAGIC and version == INDEXED_PAYLOAD_VERSION)


@dataclasses.dataclass(frozen=True)
class _Header:
    fields: dict[str, Any]
    digest: bytes  # SHA-256 of the signed header, which every section's signature covers
    reply_keys: KeyRing
    count: int
    shared_start: int
    index_start: int
    sections_start: int


def _read_header(ranges: _Ranges, keys: KeyRing, expected_sha256: str) -> _Header:
    """The header, once it is the one the job was submitted with (``expected_sha256``, from the job parameter) and
    its signature checks out."""
    prefix = ranges.get(0, _PREFIX.size)
    magic, version, header_length = _PREFIX.unpack(prefix)
    if magic != PAYLOAD_MAGIC or version != INDEXED_PAYLOAD_VERSION:
        raise PayloadError(f"corrupt payload: not an indexed payload (magic {magic!r}, version {version})")
    header_end = _PREFIX.size + header_length
    signed_header = ranges.get(0, header_end)
    if hashlib.sha256(signed_header).hexdigest() != expected_sha256:
        raise PayloadReplacedError(
            "payload refused: the stored payload object is not the one this job was submitted with (its header "
            "does not match the SHA-256 in the job's parameters). Someone with write access to the bucket replaced "
            "it after submission, possibly with an earlier genuine payload; nothing of it was run. Check who can "
            "write to the bucket's payload prefix, then submit the tasks again"
        )
    reply_keys = keys.verify(signed_header, ranges.get(header_end, header_end + SIGNATURE_BYTES))
    if reply_keys is None:
        raise PayloadSignatureError(
            "payload refused: its header is unsigned or its signature does not match any key of this job's signing "
            "secret. It was written by someone without the key or changed after signing; if the adapter and the job "
            "use different secrets, point both at the stack's SigningSecretArn"
        )
    try:
        fields = json.loads(signed_header[_PREFIX.size :].decode())
        count, shared_size = int(fields["count"]), int(fields["shared_size"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"corrupt payload: unreadable header ({exc})") from exc
    shared_start = header_end + SIGNATURE_BYTES
    index_start = shared_start + shared_size
    return _Header(
        fields=fields,
        digest=hashlib.sha256(signed_header).digest(),
        reply_keys=reply_keys,
        count=count,
        shared_start=shared_start,
        index_start=index_start,
        sections_start=index_start + _OFFSET.size * (count + 1),
    )


def _read_section(ranges: _Ranges, header: _Header, index: int) -> tuple[TaskEntry, bytes]:
    """Task ``index``'s entry and its own blobs, once the section's signature checks out."""
    bounds = ranges.get(header.index_start + _OFFSET.size * index, header.index_start + _OFFSET.size * (index + 2))
    start, end = _OFFSET.unpack_from(bounds, 0)[0], _OFFSET.unpack_from(bounds, _OFFSET.size)[0]
    if end - start < _SECTION_LENGTH.size + SIGNATURE_BYTES:
        raise PayloadError(f"corrupt payload: the index gives task {index} a section of {end - start} bytes")
    section = ranges.get(header.sections_start + start, header.sections_start + end)
    body, signature = section[:-SIGNATURE_BYTES], section[-SIGNATURE_BYTES:]
    if header.reply_keys.verify(header.digest + _SECTION_INDEX.pack(index) + body, signature) is None:
        raise PayloadSignatureError(
            f"payload refused: the section of task {index} is unsigned, signed for another index or another "
            "payload, or changed after signing"
        )
    (entry_length,) = _SECTION_LENGTH.unpack_from(body)
    entry_end = _SECTION_LENGTH.size + entry_length
    try:
        entry_json: Any = json.loads(body[_SECTION_LENGTH.size : entry_end].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"corrupt payload: unreadable entry of task {index} ({exc})") from exc
    return TaskEntry.from_json(entry_json), body[entry_end:]


def read_indexed_entry(
    first: bytes, total: int, read: RangeReader, index: int, keys: KeyRing, *, header_sha256: str
) -> Payload:
    """The payload of array child ``index`` (its one task), from the stored envelope's first bytes, its total size
    and a range reader; ``header_sha256`` comes from the job parameter. Nothing is parsed before the digest and the
    signature that cover it check out."""
    ranges = _Ranges(first, total, read)
    header = _read_header(ranges, keys, header_sha256)
    if not 0 <= index < header.count:
        raise PayloadError(
            f"array index {index} is outside the payload's {header.count} tasks: the array size and the payload "
            "disagree"
        )
    entry, own_blobs = _read_section(ranges, header, index)
    shared = ranges.get(header.shared_start, header.index_start) if header.index_start > header.shared_start else b""
    try:
        fields = header.fields
        return Payload(
            python=str(fields["python"]),
            cloudpickle=str(fields["cloudpickle"]),
            result_store=str(fields["result_store"]),
            nonce=str(fields["nonce"]),
            tasks=(entry,),
            blob_area=shared + own_blobs,
            reply_keys=header.reply_keys,
        )
    except KeyError as exc:
        raise PayloadError(f"corrupt payload: the header has no {exc}") from exc


def indexed_task_ids(envelope: bytes, keys: KeyRing, *, header_sha256: str) -> tuple[str, ...]:
    """Every task id of a whole stored envelope, in array-index order, each from its signed section: how a restarted
    adapter maps an array job it finds to its tasks. ``header_sha256`` comes from the job parameter."""
    ranges = _Ranges(envelope, len(envelope), lambda start, end: envelope[start:end])
    header = _read_header(ranges, keys, header_sha256)
    return tuple(_read_section(ranges, header, index)[0].task_id for index in range(header.count))
