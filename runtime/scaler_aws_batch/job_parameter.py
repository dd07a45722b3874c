"""The payload parameter: what AWS substitutes for ``Ref::payload`` in the job's command, naming its envelope
(:mod:`scaler_aws_batch.wire`). It is one of::

    inline:<base64 of the envelope, or of its gzip>
    ref:<sha256 of the stored bytes>:<key>:<store url>
    indexed:<sha256 of the signed header>:<key>:<store url>

``indexed`` names a stored array payload in format 3 (:mod:`scaler_aws_batch.indexed_payload`), which each child
reads in ranges, so no child can check a digest of the whole object. Its signatures protect each part, and the
digest of its signed header (which holds the submission's nonce, and which every section's signature covers) binds
the stored object to this one job: another genuine payload put under the key, such as an earlier array's, is refused
before any section is read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from scaler_aws_batch.errors import PayloadError
from scaler_aws_batch.indexed_payload import indexed_header_sha256
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
    header_sha256: str  # of the payload's signed header: binds the stored object to this job
    key: str
    store_url: str


def inline_parameter(envelope: bytes) -> str:
    return f"{INLINE_SCHEME}:{base64.b64encode(envelope).decode('ascii')}"


def ref_parameter(stored_bytes: bytes, key: str, store_url: str) -> str:
    if ":" in key:
        raise ValueError(f"store keys must not contain ':', got {key!r}")
    return f"{REF_SCHEME}:{sha256_hex(stored_bytes)}:{key}:{store_url}"


def indexed_parameter(envelope: bytes, key: str, store_url: str) -> str:
    """The parameter of the indexed ``envelope`` stored under ``key``: it carries the digest of its signed header."""
    if ":" in key:
        raise ValueError(f"store keys must not contain ':', got {key!r}")
    return f"{INDEXED_SCHEME}:{indexed_header_sha256(envelope)}:{key}:{store_url}"


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
        digest, _, remainder = rest.partition(":")
        key, _, store_url = remainder.partition(":")
        if not _is_sha256_hex(digest) or not key or not store_url:
            raise PayloadError(
                "corrupt payload: an indexed parameter must be indexed:<sha256 of the header>:<key>:<store url> "
                "(a parameter without the digest comes from an older adapter; run the adapter and the job image "
                "from the same scaler-aws-batch release)"
            )
        return IndexedParameter(header_sha256=digest, key=key, store_url=store_url)
    raise PayloadError(
        f"corrupt payload: unknown payload scheme {scheme[:16]!r} (expected 'inline', 'ref' or 'indexed'); "
        "rebuild the job image from the same scaler-aws-batch release as the adapter"
    )


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(char in "0123456789abcdef" for char in value)
