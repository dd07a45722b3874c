"""Ship the client's own modules with its tasks: a Scaler serializer that pickles local code by value.

cloudpickle pickles a module-level function or class by reference (its module's name and its qualified name), so a
task whose function lives in ``mylib.py`` beside the client script fails in the job with ``No module named 'mylib'``.
Before it serializes anything, :class:`LocalCodeSerializer` registers every module imported from the client's own
directories (and not from site-packages or the standard library) with ``cloudpickle.register_pickle_by_value``, so
their code travels inside the task's bytes. The bytes stay plain cloudpickle; loading the serializer in the job needs
only this module and cloudpickle, not Scaler.

Compiled extension modules (``.so``, ``.pyd``) cannot travel by value: they are never registered, and a
:class:`LocalCodeWarning` names each one the client has imported from its directories.
"""

from __future__ import annotations

import importlib.machinery
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Iterable
from typing import Any

import cloudpickle

__all__ = ["LocalCodeSerializer", "LocalCodeWarning", "default_directories"]

#: Top-level packages that must stay by reference: the job image has them, and this serializer lives in one.
NEVER_SHIPPED = frozenset({"__main__", "scaler_aws_batch", "scaler", "cloudpickle"})
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


class LocalCodeWarning(UserWarning):
    """A module from the client's directories cannot ship with its tasks (a compiled extension module)."""


def default_directories() -> tuple[str, ...]:
    """The main script's directory (when there is a script) and the current working directory."""
    directories: list[str] = []
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        directories.append(os.path.dirname(os.path.abspath(main_file)))
    directories.append(os.getcwd())
    return tuple(dict.fromkeys(os.path.realpath(directory) for directory in directories))


def _installed_directories() -> tuple[str, ...]:
    """Where installed packages and the standard library live: nothing under these ships."""
    paths = sysconfig.get_paths()
    candidates = [paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += [*site.getsitepackages(), site.getusersitepackages()]
    return tuple(os.path.realpath(path) for path in candidates if path)


def _is_installed(path: str, installed: tuple[str, ...]) -> bool:
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(path == root or path.startswith(root + os.sep) for root in installed)


def _import_root(module: types.ModuleType) -> str | None:
    """The directory a top-level module was imported from (its ``sys.path`` entry), None for built-in modules."""
    file: str | None = getattr(module, "__file__", None)
    search_path = getattr(module, "__path__", None)
    if file:
        location = os.path.dirname(os.path.realpath(file))
        return os.path.dirname(location) if search_path is not None else location
    for entry in search_path or ():  # a namespace package: no __init__ file, only directories
        return os.path.dirname(os.path.realpath(str(entry)))
    return None


def _is_compiled(module: types.ModuleType) -> bool:
    file = getattr(module, "__file__", None) or ""
    return file.endswith(_EXTENSION_SUFFIXES)


class LocalCodeSerializer:
    """A Scaler serializer (``serialize``/``deserialize``, like ``scaler.client.serializer.mixins.Serializer``) that
    ships the client's local modules by value::

        from scaler import Client
        from scaler_aws_batch import LocalCodeSerializer

        client = Client(address="tcp://scheduler:2345", serializer=LocalCodeSerializer())

    ``directories``: where local modules come from (default: the main script's directory and the current working
    directory, as they are when the serializer is made). A module ships when it was imported from one of them (the
    directory is its ``sys.path`` entry) and not from site-packages or the standard library; a package ships whole.
    ``exclude``: top-level module names that never ship (for example local code the job image also installs).
    """

    def __init__(
        self, directories: Iterable[str | os.PathLike[str]] | None = None, *, exclude: Iterable[str] = ()
    ) -> None:
        chosen = default_directories() if directories is None else directories
        self.directories: tuple[str, ...] = tuple(dict.fromkeys(os.path.realpath(os.fspath(d)) for d in chosen))
        self.exclude: frozenset[str] = frozenset(exclude)
        self._reset()

    def _reset(self, compiled: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._examined: set[str] = set()  # module names already looked at
        self._local_roots: dict[str, bool] = {}  # top-level name -> ships by value
        self._compiled: set[str] = set(compiled)  # compiled extension modules found in the directories
        self._modules_seen = -1  # len(sys.modules) at the last scan: unchanged means nothing new was imported
        self._installed = _installed_directories()
        # Where none of the directories exists (a job on another machine), nothing can come from them: no scan.
        self._searching = any(os.path.isdir(directory) for directory in self.directories)

    # The job gets the settings and the compiled modules known when the client pickled the serializer (as it
    # connects, usually after the script's imports), so its ModuleNotFoundError can name them; caches are rebuilt.
    def __getstate__(self) -> dict[str, Any]:
        self.ship_local_modules()
        return {"directories": self.directories, "exclude": self.exclude, "compiled": self.compiled_modules}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directories = tuple(state["directories"])
        self.exclude = frozenset(state["exclude"])
        self._reset(state.get("compiled", ()))

    @property
    def compiled_modules(self) -> tuple[str, ...]:
        """The compiled extension modules found in the directories: they cannot ship."""
        return tuple(sorted(self._compiled))

    def __repr__(self) -> str:
        return f"LocalCodeSerializer(directories={list(self.directories)!r}, exclude={sorted(self.exclude)!r})"

    def serialize(self, obj: Any) -> bytes:
        self.ship_local_modules()
        return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def deserialize(self, payload: bytes) -> Any:
        return cloudpickle.loads(payload)

    def ship_local_modules(self) -> tuple[str, ...]:
        """Register the local modules imported so far with cloudpickle; returns every top-level name that ships."""
        with self._lock:
            if self._searching and len(sys.modules) != self._modules_seen:
                for name, module in list(sys.modules.items()):
                    if name not in self._examined and isinstance(module, types.ModuleType):
                        self._examined.add(name)
                        self._examine(name, module)
                self._modules_seen = len(sys.modules)
            return tuple(sorted(name for name, ships in self._local_roots.items() if ships))

    def _examine(self, name: str, module: types.ModuleType) -> None:
        top = name.partition(".")[0]
        if top not in self._local_roots:
            self._local_roots[top] = self._is_local(top)
        if not self._local_roots[top]:
            return
        if _is_compiled(module):
            self._compiled.add(name)
            warnings.warn(
                f"module {name} ({module.__file__}) is a compiled extension module: it cannot ship with the tasks. "
                "Install it in the job image (CDK context requirements_file, see docs/deploy.md) or tasks that use "
                "it fail with ModuleNotFoundError",
                LocalCodeWarning,
                stacklevel=4,
            )
            if name == top:
                self._local_roots[top] = False  # an extension is never registered
        elif name == top:
            try:
                cloudpickle.register_pickle_by_value(module)  # a package covers its submodules
            except ValueError:  # listed in sys.modules under another name: cloudpickle cannot find it by name
                self._local_roots[top] = False

    def _is_local(self, top: str) -> bool:
        module = sys.modules.get(top)
        if top in NEVER_SHIPPED or top in self.exclude or module is None or top in sys.builtin_module_names:
            return False
        root = _import_root(module)
        return root is not None and root in self.directories and not _is_installed(root, self._installed)
