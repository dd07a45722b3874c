"""HMAC-SHA256 keys that sign every payload envelope (adapter -> job) and every result (job -> adapter).

Whoever can write to the bucket can write a payload or a result; without the key they cannot make one that the
runner or the adapter accepts, and nothing is unpickled before its signature checks out.

Key material is a *key ring*: one or more keys separated by whitespace, the first of which signs. Every key of
the ring is accepted, which is how a key is rotated (docs/security.md). Each signature names its key by a short id
(a hash of the key), so a verifier never tries keys blindly. A job signs its results with the key that signed its
payload, so an adapter that only knows the old key still accepts the results of jobs it submitted.

Where the ring comes from:

* AWS: a Secrets Manager secret the CDK stack creates with a generated value. The adapter reads it by the name in
  the stack outputs; the job reads it by the name in its job definition's environment. The key itself never
  travels in job parameters or logs.
* Local: a key file created with mode 0600 in the work directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import pathlib
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Final

from scaler_aws_batch.contracts import SIGNING_KEY_FILE_ENV, SIGNING_SECRET_ENV
from scaler_aws_batch.errors import SigningKeyError

#: Bytes of the key id that precedes every MAC.
KEY_ID_BYTES: Final = 8
MAC_BYTES: Final = hashlib.sha256().digest_size
#: The signature trailer: key id then HMAC-SHA256.
SIGNATURE_BYTES: Final = KEY_ID_BYTES + MAC_BYTES
#: Fewer characters than this make a key too easy to guess.
MIN_KEY_CHARS: Final = 32
#: Characters of a freshly generated key (the CDK secret generates the same length).
GENERATED_KEY_CHARS: Final = 64
KEY_FILE_NAME: Final = "signing.key"
_KEY_ID_DOMAIN: Final = b"scaler-aws-batch key id\x00"


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_DOMAIN + key).digest()[:KEY_ID_BYTES]


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """Signing keys: ``keys[0]`` signs, every key verifies."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise SigningKeyError("the signing key ring is empty")
        for key in self.keys:
            if len(key) < MIN_KEY_CHARS:
                raise SigningKeyError(
                    f"a signing key has {len(key)} characters; use at least {MIN_KEY_CHARS} (random, no spaces)"
                )

    @staticmethod
    def parse(text: str, *, source: str) -> KeyRing:
        """A ring from the secret's or key file's text: keys separated by whitespace, the signing key first."""
        keys = tuple(part.encode() for part in text.split())
        if not keys:
            raise SigningKeyError(f"{source} holds no signing key")
        try:
            return KeyRing(keys)
        except SigningKeyError as exc:
            raise SigningKeyError(f"{source}: {exc}") from exc

    @property
    def signing_key_id(self) -> bytes:
        return _key_id(self.keys[0])

    def sign(self, data: bytes) -> bytes:
        """The signature trailer for ``data``: key id + HMAC-SHA256(key, data)."""
        return _key_id(self.keys[0]) + hmac.new(self.keys[0], data, hashlib.sha256).digest()

    def verify(self, data: bytes, signature: bytes) -> KeyRing | None:
        """The ring that signs replies for ``data`` (its verifying key first) if ``signature`` is valid, else None."""
        if len(signature) != SIGNATURE_BYTES:
            return None
        key_id, mac = signature[:KEY_ID_BYTES], signature[KEY_ID_BYTES:]
        for key in self.keys:
            if hmac.compare_digest(_key_id(key), key_id):
                expected = hmac.new(key, data, hashlib.sha256).digest()
                return KeyRing((key,)) if hmac.compare_digest(expected, mac) else None
        return None


def generate_key() -> str:
    """A new random key: URL-safe characters, no whitespace."""
    return secrets.token_urlsafe(GENERATED_KEY_CHARS)[:GENERATED_KEY_CHARS]


def ensure_key_file(path: pathlib.Path) -> KeyRing:
    """Read the local key file, creating it (mode 0600, a fresh random key) when it does not exist yet."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(generate_key() + "\n")
    return read_key_file(path)


def read_key_file(path: pathlib.Path) -> KeyRing:
    """Read a key file; refuse one that other users may read, since anyone holding the key can forge results."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise SigningKeyError(f"signing key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read signing key file {path}: {exc}") from exc
    if mode & 0o077:
        raise SigningKeyError(f"signing key file {path} has mode {mode:04o}; make it private: chmod 600 {path}")
    return KeyRing.parse(text, source=f"signing key file {path}")


#: Jobs that run as threads of one process (the emulator's in-process mode) share what was read this recently,
#: instead of one client and one GetSecretValue per job; a job that is its own process reads the secret once anyway.
SECRET_CACHE_SECONDS: Final = 60.0
_secret_cache: dict[tuple[str | None, ...], tuple[float, KeyRing]] = {}
_secret_cache_lock = threading.Lock()
_secret_fetch_locks: dict[tuple[str | None, ...], threading.Lock] = {}


def read_secret(
    secret_id: str, *, region: str | None = None, endpoint_url: str | None = None, env: Mapping[str, str] | None = None
) -> KeyRing:
    """Read the key ring from a Secrets Manager secret (its ARN or name). ``env`` supplies keys, region and
    endpoint instead of the process environment (a runner in a thread of another process)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    cache_key = (secret_id, region, endpoint_url, *(None if env is None else env.get(name) for name in names))
    with _secret_cache_lock:
        fetching = _secret_fetch_locks.setdefault(cache_key, threading.Lock())
    # One fetch at a time per secret: many runners starting at once in one process (an emulator's threads) share it.
    with fetching:
        now = time.monotonic()
        with _secret_cache_lock:
            cached = _secret_cache.get(cache_key)
        if cached is not None and now - cached[0] < SECRET_CACHE_SECONDS:
            return cached[1]
        ring = _fetch_secret(secret_id, region=region, endpoint_url=endpoint_url, env=env)
        with _secret_cache_lock:
            _secret_cache[cache_key] = (now, ring)
        return ring


def _fetch_secret(
    secret_id: str, *, region: str | None, endpoint_url: str | None, env: Mapping[str, str] | None
) -> KeyRing:
    import boto3
    import botocore.exceptions

    if region is None and secret_id.startswith("arn:"):
        region = secret_id.split(":")[3] or None  # arn:partition:secretsmanager:REGION:account:secret:name
    if env is None:
        client = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint_url)
    else:
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            region_name=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        )
        endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_SECRETS_MANAGER") or env.get("AWS_ENDPOINT_URL") or None
        client = session.client("secretsmanager", endpoint_url=endpoint)
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        # Imported here: the runner loads this module too and reaches this branch only on failure.
        from scaler_aws_batch.aws_calls import CREDENTIAL_ERROR_CODES, HINTS, ErrorClass

        if code in CREDENTIAL_ERROR_CODES:
            raise SigningKeyError(
                f"cannot read signing secret {secret_id!r}: AWS rejected the credentials ({code}); "
                f"{HINTS[ErrorClass.CREDENTIALS]}"
            ) from exc
        raise SigningKeyError(
            f"cannot read signing secret {secret_id!r} ({code}): check that it exists in this region and that "
            "this role may call secretsmanager:GetSecretValue on it (the stack grants the job role and the "
            "adapter policy)"
        ) from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise SigningKeyError(
            f"cannot read signing secret {secret_id!r}: no AWS credentials; configure the default credential chain "
            "(AWS_PROFILE, `aws sso login`, an instance or task role)"
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise SigningKeyError(f"cannot read signing secret {secret_id!r}: {exc}") from exc
    finally:
        client.close()
    text = response.get("SecretString")
    if not text:
        raise SigningKeyError(f"signing secret {secret_id!r} has no string value")
    return KeyRing.parse(text, source=f"signing secret {secret_id!r}")


def job_key_environment(*, key_file: pathlib.Path | None = None, secret_id: str | None = None) -> dict[str, str]:
    """The variables that tell a job where its key ring is (a reference, never the key)."""
    if key_file is not None:
        return {SIGNING_KEY_FILE_ENV: str(key_file)}
    if secret_id is not None:
        return {SIGNING_SECRET_ENV: secret_id}
    return {}


def load_job_keys(env: Mapping[str, str]) -> KeyRing:
    """The runner's key ring, from the environment the job definition (or the local backend) sets."""
    key_file = env.get(SIGNING_KEY_FILE_ENV)
    if key_file:
        return read_key_file(pathlib.Path(key_file))
    secret_id = env.get(SIGNING_SECRET_ENV)
    if secret_id:
        return read_secret(secret_id, env=env)
    raise SigningKeyError(
        f"the job has no signing key: its job definition must set {SIGNING_SECRET_ENV} (the stack does) or "
        f"{SIGNING_KEY_FILE_ENV}; refusing to run unsigned work"
    )


def split_signed(data: bytes) -> tuple[bytes, bytes]:
    """``(signed bytes, signature trailer)`` of a signed object."""
    if len(data) < SIGNATURE_BYTES:
        return data, b""
    return data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]


def key_ids(ring: KeyRing) -> Sequence[str]:
    """Key ids as hex, for logs (never the keys)."""
    return [_key_id(key).hex() for key in ring.keys]
