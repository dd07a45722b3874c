"""The payload parameter: what AWS substitutes for ``Ref::payload`` in the job's command, naming its envelope
(:mod:`scaler_aws_batch.wire`). It is one of::

    inline:<base64 of the envelope, or of its gzip>
    ref:<sha256 of the stored bytes>:<key>:<store url>
    indexed:<key>:<store url>

``indexed`` names a stored array payload in format 3 (:mod:`scaler_aws_batch.indexed_payload`), which each child
reads in ranges: its signatures, not a digest of the whole object, protect it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from scaler_aws_batch.errors import PayloadError
from scaler_aws_batch.wire import sha256_hex

INLINE_SCHEME = "inline"
REF_SCHEME = "ref"
INDEXED_SCHEME = "indexed"


@dataclasses.dataclass(frozen=True)
class InlineParameter:
    envelope: bytes  # possibly gzip-compressed


@dataclasses.dataclass(frozen=True)
class RefParameter:
    sha256: str
    key: str
    store_url: str


@dataclasses.dataclass(frozen=True)
class IndexedParameter:
    key: str
    store_url: str


def inline_parameter(envelope: bytes) -> str:
    return f"{INLINE_SCHEME}:{base64.b64encode(envelope).decode('ascii')}"


def ref_parameter(stored_bytes: bytes, key: str, store_url: str) -> str:
    if ":" in key:
        raise ValueError(f"store keys must not contain ':', got {key!r}")
    return f"{REF_SCHEME}:{sha256_hex(stored_bytes)}:{key}:{store_url}"


def indexed_parameter(key: str, store_url: str) -> str:
    if ":" in key:
        raise ValueError(f"store keys must not contain ':', got {key!r}")
    return f"{INDEXED_SCHEME}:{key}:{store_url}"


def parse_parameter(value: str) -> InlineParameter | RefParameter | IndexedParameter:
    scheme, _, rest = value.partition(":")
    if scheme == INLINE_SCHEME:
        try:
            return InlineParameter(base64.b64decode(rest.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PayloadError("corrupt payload: the inline parameter is not valid base64") from exc
    if scheme == REF_SCHEME:
        digest, _, remainder = rest.partition(":")
        key, _, store_url = remainder.partition(":")
        if len(digest) != 64 or not key or not store_url:
            raise PayloadError("corrupt payload: a ref parameter must be ref:<sha256>:<key>:<store url>")
        return RefParameter(sha256=digest, key=key, store_url=store_url)
    if scheme == INDEXED_SCHEME:
        key, _, store_url = rest.partition(":")
        if not key or not store_url:
            raise PayloadError("corrupt payload: an indexed parameter must be indexed:<key>:<store url>")
        return IndexedParameter(key=key, store_url=store_url)
    raise PayloadError(
        f"corrupt payload: unknown payload scheme {scheme[:16]!r} (expected 'inline', 'ref' or 'indexed'); "
        "rebuild the job image from the same scaler-aws-batch release as the adapter"
    )
