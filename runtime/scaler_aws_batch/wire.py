"""The wire format between the adapter and the runner. Both import this module; nothing else encodes payloads.

A **job payload** is a binary envelope::

    b"SCBJ" | version: u16 | header length: u32 | header (UTF-8 JSON) | blob area | signature

The header lists the job's tasks (one for a single job, one per child for an array job) and a random per-submission
``nonce``. Every task names its serializer, function and argument blobs by SHA-256. A blob is either inline (an
offset into the blob area) or a content-addressed object in the store (``objects/<sha256>``), so a function shared
by 1,000 tasks is stored once. The runner checks every blob against its digest.

The **signature** (:mod:`scaler_aws_batch.signing`) is a key id and HMAC-SHA256 over everything before it. The
runner checks it before it parses the header, so a payload written by anyone without the key, or changed after
signing, is refused before anything is unpickled; the signed header pins the digest of every stored blob.

The blobs are the client's bytes exactly as Scaler's object storage holds them: the adapter never unpickles them.

The **payload parameter** (what AWS substitutes for ``Ref::payload``) names the envelope: see
:mod:`scaler_aws_batch.job_parameter`.

A **task result** is ``b"SCBR" | version: u16 | header length: u32 | header JSON | body | signature``, stored at
``results/<task id>``, signed with the key that signed the payload. Its header names the task, the job and attempt
that wrote it, and the payload's nonce, so the adapter takes only results written for the submission it made. The
body is either the client serializer's bytes of the return value (success) or a pickled exception (failure),
which is Scaler's own failure format, so the adapter hands it to Scaler untouched.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import struct
import sys
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from scaler_aws_batch.errors import (
    PayloadError,
    PayloadSignatureError,
    PayloadVersionError,
    ResultFromAnotherSubmissionError,
    ResultRejectedError,
)
from scaler_aws_batch.signing import KeyRing, split_signed

PAYLOAD_MAGIC = b"SCBJ"
RESULT_MAGIC = b"SCBR"
#: Bump when the envelope changes incompatibly. The runner refuses versions it does not know. Version 2 added the
#: signature and the nonce; a version-1 runner refuses version 2 by its version number.
PAYLOAD_VERSION = 2
RESULT_VERSION = 2
SUPPORTED_PAYLOAD_VERSIONS = frozenset({2})

_PREFIX = struct.Struct("!4sHI")  # magic, version, header length
_GZIP_MAGIC = b"\x1f\x8b"


OBJECTS_PREFIX = "objects/"
PAYLOADS_PREFIX = "payloads/"
RESULTS_PREFIX = "results/"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def python_version_tag(version_info: Sequence[int] | None = None) -> str:
    info = version_info if version_info is not None else sys.version_info
    return f"{info[0]}.{info[1]}"


def result_key(task_id_hex: str) -> str:
    return f"{RESULTS_PREFIX}{task_id_hex}"


def object_key(digest: str) -> str:
    return f"{OBJECTS_PREFIX}{digest}"


# --- payloads -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlobRef:
    """Where one blob lives: inline in the envelope (``offset``/``length``) or in the store (``key``)."""

    sha256: str
    size: int
    offset: int | None = None
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.key is not None:
            out["key"] = self.key
        else:
            out["offset"] = self.offset
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> BlobRef:
        try:
            sha, size = str(data["sha256"]), int(data["size"])
            key = data.get("key")
            offset = data.get("offset")
        except (KeyError, TypeError, ValueError) as exc:
            raise PayloadError(f"corrupt payload: malformed blob reference {data!r}") from exc
        if (key is None) == (offset is None):
            raise PayloadError("corrupt payload: a blob must be either inline or stored")
        return BlobRef(sha256=sha, size=size, offset=None if offset is None else int(offset), key=key)


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """One task inside a payload."""

    task_id: str
    serializer: BlobRef
    function: BlobRef
    arguments: tuple[BlobRef, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "serializer": self.serializer.to_json(),
            "function": self.function.to_json(),
            "arguments": [argument.to_json() for argument in self.arguments],
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> TaskEntry:
        try:
            return TaskEntry(
                task_id=str(data["task_id"]),
                serializer=BlobRef.from_json(data["serializer"]),
                function=BlobRef.from_json(data["function"]),
                arguments=tuple(BlobRef.from_json(item) for item in data["arguments"]),
            )
        except (KeyError, TypeError) as exc:
            raise PayloadError(f"corrupt payload: malformed task entry ({exc})") from exc


@dataclasses.dataclass(frozen=True)
class TaskBlobs:
    """The client's bytes for one task, as the adapter fetched them from Scaler's object storage."""

    task_id: str
    serializer: bytes
    function: bytes
    arguments: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class Payload:
    """A decoded payload: header fields plus the inline blob area."""

    python: str
    cloudpickle: str
    result_store: str
    nonce: str
    tasks: tuple[TaskEntry, ...]
    blob_area: bytes
    #: The ring results are signed with: the key that signed this payload.
    reply_keys: KeyRing

    def inline_blob(self, ref: BlobRef) -> bytes:
        assert ref.offset is not None
        data = self.blob_area[ref.offset : ref.offset + ref.size]
        if len(data) != ref.size or sha256_hex(data) != ref.sha256:
            raise PayloadError(f"corrupt payload: inline blob {ref.sha256[:12]} does not match its SHA-256")
        return data


class PayloadBuilder:
    """Assembles one payload. Blobs are deduplicated by digest; those at or above ``store_threshold`` bytes are
    left for the caller to upload (:attr:`stored_blobs`) and referenced by key."""

    def __init__(
        self,
        *,
        python: str,
        cloudpickle_version: str,
        result_store: str,
        store_threshold: int,
        nonce: str,
        keys: KeyRing,
    ) -> None:
        self._nonce = nonce
        self._keys = keys
        self._python = python
        self._cloudpickle = cloudpickle_version
        self._result_store = result_store
        self._store_threshold = store_threshold
        self._area = bytearray()
        self._refs: dict[str, BlobRef] = {}
        self._tasks: list[TaskEntry] = []
        self.stored_blobs: dict[str, bytes] = {}  # key -> bytes the caller must upload

    def _add(self, data: bytes) -> BlobRef:
        digest = sha256_hex(data)
        ref = self._refs.get(digest)
        if ref is not None:
            return ref
        if len(data) >= self._store_threshold:
            key = object_key(digest)
            ref = BlobRef(sha256=digest, size=len(data), key=key)
            self.stored_blobs[key] = data
        else:
            ref = BlobRef(sha256=digest, size=len(data), offset=len(self._area))
            self._area.extend(data)
        self._refs[digest] = ref
        return ref

    def add_task(self, blobs: TaskBlobs) -> None:
        self._tasks.append(
            TaskEntry(
                task_id=blobs.task_id,
                serializer=self._add(blobs.serializer),
                function=self._add(blobs.function),
                arguments=tuple(self._add(argument) for argument in blobs.arguments),
            )
        )

    def encode(self) -> bytes:
        header = {
            "python": self._python,
            "cloudpickle": self._cloudpickle,
            "result_store": self._result_store,
            "nonce": self._nonce,
            "tasks": [task.to_json() for task in self._tasks],
        }
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        signed = _PREFIX.pack(PAYLOAD_MAGIC, PAYLOAD_VERSION, len(header_bytes)) + header_bytes + bytes(self._area)
        return signed + self._keys.sign(signed)


def decode_payload(envelope: bytes, keys: KeyRing) -> Payload:
    """Check an envelope's signature, then parse it. Raises :class:`PayloadVersionError`,
    :class:`PayloadSignatureError` or :class:`PayloadError` with what to fix; nothing is parsed before the
    signature checks out."""
    if envelope[:2] == _GZIP_MAGIC:
        try:
            envelope = gzip.decompress(envelope)
        except (OSError, EOFError, zlib.error) as exc:
            raise PayloadError(f"corrupt payload: gzip data is damaged ({exc})") from exc
    if len(envelope) < _PREFIX.size:
        raise PayloadError(f"corrupt payload: {len(envelope)} bytes is shorter than the envelope prefix")
    magic, version, header_length = _PREFIX.unpack_from(envelope)
    if magic != PAYLOAD_MAGIC:
        raise PayloadError(f"corrupt payload: bad magic {magic!r}, this is not a scaler-aws-batch payload")
    if version not in SUPPORTED_PAYLOAD_VERSIONS:
        raise PayloadVersionError(
            f"payload format version {version} is not supported by this runner (it reads "
            f"{sorted(SUPPORTED_PAYLOAD_VERSIONS)}): rebuild the job image from the same scaler-aws-batch release "
            "as the adapter"
        )
    signed, signature = split_signed(envelope)
    reply_keys = keys.verify(signed, signature)
    if reply_keys is None:
        raise PayloadSignatureError(
            "payload refused: it is unsigned or its signature does not match any key of this job's signing secret. "
            "It was written by someone without the key or changed after signing; if the adapter and the job use "
            "different secrets, point both at the stack's SigningSecretArn"
        )
    header_end = _PREFIX.size + header_length
    if header_end > len(signed):
        raise PayloadError("corrupt payload: the header runs past the end of the envelope")
    try:
        header = json.loads(signed[_PREFIX.size : header_end].decode())
        return Payload(
            python=str(header["python"]),
            cloudpickle=str(header["cloudpickle"]),
            result_store=str(header["result_store"]),
            nonce=str(header["nonce"]),
            tasks=tuple(TaskEntry.from_json(item) for item in header["tasks"]),
            blob_area=signed[header_end:],
            reply_keys=reply_keys,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PayloadError(f"corrupt payload: unreadable header ({exc})") from exc


def maybe_gzip(data: bytes, *, min_saving: float = 0.1) -> bytes:
    """gzip ``data`` when that saves at least ``min_saving`` of its size; the reader detects gzip by its magic."""
    compressed = gzip.compress(data, compresslevel=6, mtime=0)
    return compressed if len(compressed) <= len(data) * (1 - min_saving) else data


# --- results ------------------------------------------------------------------------------------------------------

ResultStatus = Literal["success", "failure"]


@dataclasses.dataclass(frozen=True)
class TaskResultEnvelope:
    task_id: str
    status: ResultStatus
    body: bytes
    nonce: str
    job_id: str = ""
    attempt: int = 0
    duration_seconds: float = 0.0
    #: Stored blobs the runner found not matching their digest: the adapter uploads them again.
    bad_objects: tuple[str, ...] = ()
    #: For the usage log without a DescribeJobs call per array child: when the runner started and wrote this result
    #: (epoch seconds) and the compute environment it ran in (``AWS_BATCH_CE_NAME``; None elsewhere).
    started_at: float | None = None
    stopped_at: float | None = None
    compute_environment: str | None = None

    def encode(self, keys: KeyRing) -> bytes:
        header = {
            "task_id": self.task_id,
            "status": self.status,
            "nonce": self.nonce,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "duration_seconds": round(self.duration_seconds, 6),
            "bad_objects": list(self.bad_objects),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "compute_environment": self.compute_environment,
        }
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        signed = _PREFIX.pack(RESULT_MAGIC, RESULT_VERSION, len(header_bytes)) + header_bytes + self.body
        return signed + keys.sign(signed)


def decode_result(
    data: bytes, keys: KeyRing, *, expected_task_id: str, expected_nonce: str | None
) -> TaskResultEnvelope:
    """Check a stored result's signature, then that it was written for ``expected_task_id`` by the submission whose
    payload carried ``expected_nonce`` (None: any submission, for jobs a restarted adapter re-attached to). Raises
    :class:`ResultRejectedError`; the body is never unpickled here."""

    def rejected(why: str, kind: type[ResultRejectedError] = ResultRejectedError) -> ResultRejectedError:
        return kind(
            f"the stored result of task {expected_task_id} was refused and nothing of it was unpickled: {why}. "
            "Check who else can write to the bucket's prefix; resubmit the task"
        )

    if len(data) < _PREFIX.size:
        raise rejected(f"{len(data)} bytes is too short to be a result")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != RESULT_MAGIC or version != RESULT_VERSION:
        raise rejected(f"it is not a version-{RESULT_VERSION} result (magic {magic!r}, version {version})")
    signed, signature = split_signed(data)
    if keys.verify(signed, signature) is None:
        raise rejected("it is unsigned or its signature does not match (written without the key, or tampered with)")
    header_end = _PREFIX.size + header_length
    try:
        header = json.loads(signed[_PREFIX.size : header_end].decode())
        task_id, status, nonce = str(header["task_id"]), header["status"], str(header["nonce"])
        envelope = TaskResultEnvelope(
            task_id=task_id,
            status=status,
            body=signed[header_end:],
            nonce=nonce,
            job_id=str(header.get("job_id", "")),
            attempt=int(header.get("attempt", 0)),
            duration_seconds=float(header.get("duration_seconds", 0.0)),
            bad_objects=tuple(str(key) for key in header.get("bad_objects", ())),
            started_at=_optional_float(header.get("started_at")),
            stopped_at=_optional_float(header.get("stopped_at")),
            compute_environment=str(header["compute_environment"]) if header.get("compute_environment") else None,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise rejected(f"its header is unreadable ({type(exc).__name__})") from exc
    if task_id != expected_task_id:
        raise rejected(f"it holds the result of task {task_id}")
    if expected_nonce is not None and nonce != expected_nonce:
        raise rejected(
            "it was not written by the job this adapter submitted (planted, or left by an earlier run)",
            ResultFromAnotherSubmissionError,
        )
    if status not in ("success", "failure"):
        raise rejected(f"unknown status {status!r}")
    return envelope


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
