"""A directory on the local disk as an object store (``file:///path``): the embedded default's store."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import tempfile
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

from scaler_aws_batch.errors import ObjectMissingError, StoreError
from scaler_aws_batch.stores.base import ObjectStore

#: Lock files of the conditional writes, next to their object; never listed as keys.
_LOCK_PREFIX = ".lock-"


def _tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalDirectoryStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = pathlib.Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def from_url(url: str) -> LocalDirectoryStore:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"a local store URL looks like file:///absolute/path, got {url!r}")
        return LocalDirectoryStore(unquote(parsed.path))

    @property
    def url(self) -> str:
        return self._root.as_uri()

    def _path(self, key: str) -> pathlib.Path:
        path = (self._root / key).resolve()
        if self._root not in path.parents:
            raise ValueError(f"store key {key!r} escapes the store directory")
        return path

    def _write_temp(self, path: pathlib.Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return temp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            os.replace(self._write_temp(path, data), path)  # atomic: readers never see half an object
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            temp = self._write_temp(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        try:
            os.link(temp, path)  # link() fails if the name exists: an atomic create-only write
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        finally:
            os.unlink(temp)

    def create_tagged(self, key: str, data: bytes) -> str | None:
        return _tag(data) if self.put_if_absent(key, data) else None

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _tag(data)

    def replace_tagged(self, key: str, data: bytes, tag: str) -> str | None:
        path = self._path(key)
        try:
            with self._locked(path):  # compare and swap: no other conditional write in between
                try:
                    if _tag(path.read_bytes()) != tag:
                        return None
                except FileNotFoundError:
                    return None
                os.replace(self._write_temp(path, data), path)
                return _tag(data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self, path: pathlib.Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(_LOCK_PREFIX + path.name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"object {key!r} does not exist in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def read_range(self, key: str, start: int, end: int) -> tuple[bytes, int]:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(start)
                return handle.read(max(0, end - start)), size
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"object {key!r} does not exist in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> set[str]:
        directory, _, name_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self._root
        if not base.is_dir():
            return set()
        head = f"{directory}/" if directory else ""
        return {
            f"{head}{entry.name}"
            for entry in base.iterdir()
            if entry.is_file()
            and entry.name.startswith(name_prefix)
            and not entry.name.startswith((".partial-", _LOCK_PREFIX))
        }

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {key!r} from {self.url}: {exc}") from exc
