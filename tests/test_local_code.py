"""LocalCodeSerializer on its own: which modules it ships by value, and what travels with it to the job."""

from __future__ import annotations

import importlib
import pathlib
import pickle
import subprocess
import sys
import types
from collections.abc import Iterator

import cloudpickle
import pytest

from scaler_aws_batch.local_code import LocalCodeSerializer, LocalCodeWarning


@pytest.fixture
def client_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A client's directory on sys.path; what the test imports from it is forgotten (and unregistered) after."""
    directory = tmp_path / "client"
    directory.mkdir()
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    yield directory
    sys.path.remove(str(directory))
    for name in set(sys.modules) - before:
        module = sys.modules.pop(name)
        if name in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES:
            cloudpickle.unregister_pickle_by_value(module)


def _write(directory: pathlib.Path, relative: str, source: str) -> None:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def _in_a_fresh_process_without(names: list[str], payload: bytes) -> object:
    """Load ``payload`` where ``names`` cannot be imported, as in the job."""
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.partition(".")[0] in names}
    try:
        return cloudpickle.loads(payload)
    finally:
        sys.modules.update(saved)


def test_modules_and_packages_from_the_client_directory_ship_by_value(client_dir: pathlib.Path) -> None:
    _write(client_dir, "shipme.py", "SCALE = 3\ndef scale(x):\n    return SCALE * x\n")
    _write(client_dir, "shippkg/__init__.py", "")
    _write(client_dir, "shippkg/inner.py", "class Point:\n    def __init__(self, x):\n        self.x = x\n")
    shipme = importlib.import_module("shipme")
    inner = importlib.import_module("shippkg.inner")
    serializer = LocalCodeSerializer(directories=[client_dir])

    function_bytes, point_bytes = serializer.serialize(shipme.scale), serializer.serialize(inner.Point(5))
    assert serializer.ship_local_modules() == ("shipme", "shippkg")
    function = _in_a_fresh_process_without(["shipme", "shippkg"], function_bytes)
    assert callable(function) and function(2) == 6
    assert getattr(_in_a_fresh_process_without(["shipme", "shippkg"], point_bytes), "x", None) == 5


def test_other_directories_installed_code_and_excluded_names_stay_by_reference(
    client_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    _write(elsewhere, "notlocal.py", "def f():\n    return 1\n")
    _write(client_dir, "excluded.py", "def g():\n    return 2\n")
    sys.path.insert(0, str(elsewhere))
    try:
        importlib.import_module("notlocal")
        importlib.import_module("excluded")
        installed = tmp_path / "venv" / "lib" / "site-packages"
        serializer = LocalCodeSerializer(directories=[client_dir, installed], exclude=["excluded"])
        sys.modules["fake_installed"] = types.ModuleType("fake_installed")
        sys.modules["fake_installed"].__file__ = str(installed / "fake_installed.py")
        assert serializer.ship_local_modules() == ()
        payload = serializer.serialize(sys.modules["notlocal"].f)
    finally:
        sys.path.remove(str(elsewhere))
    with pytest.raises(ModuleNotFoundError, match="notlocal"):  # pickled by reference: the job must import it
        _in_a_fresh_process_without(["notlocal"], payload)


def test_a_compiled_extension_module_is_named_and_never_registered(client_dir: pathlib.Path) -> None:
    compiled = types.ModuleType("fastpart")
    compiled.__file__ = str(client_dir / "fastpart.cpython-311-x86_64-linux-gnu.so")
    sys.modules["fastpart"] = compiled  # what importing a .so from the client directory leaves in sys.modules
    serializer = LocalCodeSerializer(directories=[client_dir])
    with pytest.warns(LocalCodeWarning, match=r"module fastpart .* compiled extension module: it cannot ship"):
        assert serializer.ship_local_modules() == ()
    assert "fastpart" not in cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    # The job learns of it with the serializer, so its ModuleNotFoundError can name it.
    assert pickle.loads(cloudpickle.dumps(serializer)).compiled_modules == ("fastpart",)


def test_the_serializer_travels_as_its_settings_and_loads_with_plain_cloudpickle(client_dir: pathlib.Path) -> None:
    serializer = LocalCodeSerializer(directories=[client_dir], exclude=["secret"])
    serializer.ship_local_modules()
    loaded = pickle.loads(cloudpickle.dumps(serializer))
    assert isinstance(loaded, LocalCodeSerializer)
    assert (loaded.directories, loaded.exclude) == ((str(client_dir.resolve()),), frozenset({"secret"}))
    assert loaded.deserialize(serializer.serialize({"a": [1, 2]})) == {"a": [1, 2]}
    assert cloudpickle.loads(serializer.serialize(b"plain")) == b"plain"


def test_default_directories_are_the_main_script_directory_and_the_working_directory(
    client_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(client_dir)
    main = types.ModuleType("__main__")
    main.__file__ = str(client_dir.parent / "script.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert LocalCodeSerializer().directories == (str(client_dir.parent.resolve()), str(client_dir.resolve()))


def test_directories_missing_on_this_machine_ship_nothing(client_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """In a job on another machine the client's directories do not exist: loading and serializing still work."""
    _write(client_dir, "localonly.py", "VALUE = 1\n")
    importlib.import_module("localonly")
    serializer = LocalCodeSerializer(directories=[tmp_path / "not-here"])
    assert serializer.ship_local_modules() == ()
    assert serializer.deserialize(serializer.serialize([1, 2])) == [1, 2]


def test_the_serializer_loads_in_a_job_image_without_scaler(client_dir: pathlib.Path) -> None:
    """The job image need not have Scaler: loading the serializer and a shipped function imports neither."""
    _write(client_dir, "noscaler.py", "def area(w, h):\n    return w * h\n")
    serializer = LocalCodeSerializer(directories=[client_dir])
    function = serializer.serialize(importlib.import_module("noscaler").area)
    script = (
        "import sys, cloudpickle\n"
        "sys.modules['scaler'] = None  # importing Scaler now fails, as in an image without it\n"
        "serializer = cloudpickle.loads(sys.stdin.buffer.read(int(sys.argv[1])))\n"
        "print(serializer.deserialize(sys.stdin.buffer.read())(6, 7))\n"
    )
    payload = cloudpickle.dumps(serializer)
    done = subprocess.run(
        [sys.executable, "-c", script, str(len(payload))],
        input=payload + function,
        capture_output=True,
        check=False,
        cwd=pathlib.Path(client_dir).parent,
    )
    assert (done.returncode, done.stdout.strip()) == (0, b"42"), done.stderr.decode(errors="replace")
