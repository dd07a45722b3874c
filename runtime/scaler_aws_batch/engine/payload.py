"""Payload planning (how a group of tasks travels to the runner) and the cache of what was uploaded when.

Inline while the rendered container overrides stay inside AWS's 8,192-character budget (measured by the backend, not
guessed), gzip when that makes it fit, otherwise large blobs go to the store as content-addressed objects and, if
still needed, the payload itself goes to the store and only a reference travels. A stored array payload is indexed
(:mod:`scaler_aws_batch.indexed_payload`): each child reads only its own task.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Mapping, Sequence

from scaler_aws_batch.backends.base import JobBackend, JobSpec
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.indexed_payload import encode_indexed_payload
from scaler_aws_batch.job_parameter import indexed_parameter, inline_parameter, ref_parameter
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores import ObjectStore
from scaler_aws_batch.wire import PAYLOADS_PREFIX, PayloadBuilder, TaskBlobs, maybe_gzip, sha256_hex

logger = logging.getLogger(__name__)

_NO_STORE = 1 << 62  # a store threshold no blob reaches: everything inline


@dataclasses.dataclass(frozen=True)
class PayloadPlan:
    parameter: str
    transport: str  # inline | inline-gzip | inline+objects | ref | indexed
    uploads: dict[str, bytes]
    nonce: str


def new_nonce() -> str:
    """A random per-submission value; the job echoes it in each signed result, which binds the result to it."""
    return secrets.token_hex(12)


def plan_payload(
    tasks: Sequence[TaskBlobs],
    *,
    spec: JobSpec,
    backend: JobBackend,
    store_url: str,
    settings: EngineSettings,
    keys: KeyRing,
    nonce: str,
) -> PayloadPlan:
    """Choose how ``tasks`` travel to the runner; see the module docstring for the order of preference."""

    def fits(parameter: str) -> bool:
        return backend.overrides_length(dataclasses.replace(spec, payload=parameter)) <= settings.overrides_budget_chars

    attempts = [(_NO_STORE, "inline")]
    threshold = settings.store_threshold_bytes
    if any(len(blob) >= threshold for task in tasks for blob in (task.serializer, task.function, *task.arguments)):
        attempts.append((threshold, "inline+objects"))  # without a large blob it would build the same envelope again
    for threshold, label in attempts:
        builder = PayloadBuilder(
            python=settings.client_python,
            cloudpickle_version=settings.cloudpickle_version,
            result_store=store_url,
            store_threshold=threshold,
            nonce=nonce,
            keys=keys,
        )
        for task in tasks:
            builder.add_task(task)
        envelope = builder.encode()
        if fits(parameter := inline_parameter(envelope)):
            return PayloadPlan(parameter, label, builder.stored_blobs, nonce)
        compressed = maybe_gzip(envelope)
        if compressed is not envelope and fits(parameter := inline_parameter(compressed)):
            return PayloadPlan(parameter, "inline-gzip" if label == "inline" else label, builder.stored_blobs, nonce)
    if len(tasks) > 1:  # an array: each child reads only its own task (format 3, ranged reads)
        indexed, stored_blobs = encode_indexed_payload(
            tasks, python=settings.client_python, cloudpickle_version=settings.cloudpickle_version,
            result_store=store_url, store_threshold=settings.store_threshold_bytes, nonce=nonce, keys=keys,
        )  # fmt: skip
        key = f"{PAYLOADS_PREFIX}{sha256_hex(indexed)}"
        return PayloadPlan(indexed_parameter(indexed, key, store_url), "indexed", {**stored_blobs, key: indexed}, nonce)
    stored = maybe_gzip(envelope)
    key = f"{PAYLOADS_PREFIX}{sha256_hex(stored)}"
    uploads = {**builder.stored_blobs, key: stored}
    return PayloadPlan(ref_parameter(stored, key, store_url), "ref", uploads, nonce)


class UploadCache:
    """Which content-addressed objects this adapter uploaded, and when: the same function is uploaded once, but again
    after ``reupload_after_seconds``, because the bucket's lifecycle rule expires objects and a long-running adapter
    must not point at expired ones."""

    def __init__(self, reupload_after_seconds: float) -> None:
        self._reupload_after = reupload_after_seconds
        self._uploaded: dict[str, float] = {}  # store key -> when this adapter last uploaded it

    def upload(self, store: ObjectStore, uploads: Mapping[str, bytes], now: float) -> None:
        """Blocking: put every object not uploaded lately."""
        for key, data in uploads.items():
            uploaded_at = self._uploaded.get(key)
            if uploaded_at is None or now - uploaded_at > self._reupload_after:
                store.put(key, data)
                self._uploaded[key] = now

    def forget(self, keys: Sequence[str]) -> None:
        """Stored objects found tampered with or corrupt: upload them again for the next task that needs them."""
        for key in keys:
            if self._uploaded.pop(key, None) is not None:
                logger.warning("stored object %s did not match its digest; it will be uploaded again", key)

    def __contains__(self, key: object) -> bool:
        return key in self._uploaded
