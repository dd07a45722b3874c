"""The work directory of a backend whose jobs run on this machine or a shared filesystem (local processes, Slurm):
the default object store under it, and the key ring that signs payloads and results, a 0600 file in it that each
job is told the path of (the key itself is never passed)."""

from __future__ import annotations

import dataclasses
import pathlib

from scaler_aws_batch.config import Settings, where
from scaler_aws_batch.errors import SigningKeyError
from scaler_aws_batch.signing import KEY_FILE_NAME, KeyRing, ensure_key_file, job_key_environment
from scaler_aws_batch.stores import ObjectStore, open_store


@dataclasses.dataclass(frozen=True)
class WorkDir:
    path: pathlib.Path
    store: ObjectStore
    keys: KeyRing
    #: The environment that names the key file to each job.
    job_env: dict[str, str]


def open_work_dir(settings: type[Settings], work_dir: str, store_url: str | None) -> WorkDir:
    """Create the work directory, open the store (``store_url``, or ``<work dir>/store``) and the key file.
    ValueError naming the setting to fix (``settings`` declares ``work_dir`` and ``store``)."""
    path = pathlib.Path(work_dir).resolve()
    url = store_url or (path / "store").as_uri()
    try:
        store = open_store(url)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot use the object store {url} ({exc.strerror}): fix {where(settings, 'store')} or "
            f"{where(settings, 'work_dir')}"
        ) from exc
    key_file = path / KEY_FILE_NAME
    try:
        keys = ensure_key_file(key_file)
    except SigningKeyError as exc:
        raise ValueError(str(exc)) from exc
    return WorkDir(path, store, keys, job_key_environment(key_file=key_file))
