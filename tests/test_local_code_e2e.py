"""Local code ships by itself, end to end on every backend: a module in the client's own directory, which the job
cannot import, runs through ``scaler_aws_batch.Client`` (or Scaler's client with ``LocalCodeSerializer``); without
them the task fails with a ``ModuleNotFoundError`` that says what to do."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import cloudpickle
import pytest
from scaler import Client as ScalerClient

from backend_harnesses import BACKENDS, started_harness
from conftest import WAIT_SECONDS
from harness import Harness
from scaler_aws_batch import Client, LocalCodeSerializer
from scaler_aws_batch.local_code import LocalCodeWarning

pytestmark = [pytest.mark.e2e, pytest.mark.job_processes]  # the job must be a process that cannot import the module

MODULE_SOURCE = """
import statistics

from clientpkg.shapes import Box

OFFSET = 10


def summarize(values):
    return Box(statistics.mean(values) + OFFSET)
"""
SHAPES_SOURCE = """
class Box:
    def __init__(self, value):
        self.value = value

    def doubled(self):
        return Box(2 * self.value)
"""


@pytest.fixture(scope="module", params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with started_harness(request, tmp_path_factory) as started, started.job_processes():
        yield started


@pytest.fixture
def client_module(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``clientmod`` (and the package ``clientpkg`` it imports) in a fresh client directory, the working directory
    of this test; only this process has that directory on its path, never the adapter or its jobs."""
    directory = tmp_path / "client"
    (directory / "clientpkg").mkdir(parents=True)
    (directory / "clientmod.py").write_text(MODULE_SOURCE)
    (directory / "clientpkg" / "__init__.py").write_text("")
    (directory / "clientpkg" / "shapes.py").write_text(SHAPES_SOURCE)
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    try:
        yield importlib.import_module("clientmod")
    finally:
        for name in [name for name in sys.modules if name.partition(".")[0] in ("clientmod", "clientpkg")]:
            module = sys.modules.pop(name)
            with contextlib.suppress(ValueError):  # only the top-level names were registered
                cloudpickle.unregister_pickle_by_value(module)


def test_one_line_client_ships_a_module_and_a_package_from_the_client_directory(
    harness: Harness, client_module: Any
) -> None:
    with Client(address=harness.adapter.scheduler) as client:
        box = client.submit(client_module.summarize, [1, 2, 3]).result(timeout=WAIT_SECONDS)
        assert box.value == 12
        # The result's class is the client's own again, and a local-class argument travels too.
        assert isinstance(box, sys.modules["clientpkg.shapes"].Box)
        assert client.submit(box.doubled).result(timeout=WAIT_SECONDS).value == 24
    assert "clientmod" not in harness.adapter.log_text()


def test_scalers_client_with_the_serializer_ships_named_directories(harness: Harness, client_module: Any) -> None:
    serializer = LocalCodeSerializer(directories=[pathlib.Path(client_module.__file__).parent])
    with ScalerClient(address=harness.adapter.scheduler, serializer=serializer) as client:
        assert client.submit(client_module.summarize, [4]).result(timeout=WAIT_SECONDS).value == 14


def test_without_the_serializer_the_task_fails_saying_how_to_ship_the_module(
    harness: Harness, client_module: Any
) -> None:
    with pytest.raises(ModuleNotFoundError) as caught:
        harness.client.submit(client_module.summarize, [1]).result(timeout=WAIT_SECONDS)
    assert caught.value.name == "clientmod"
    message = str(caught.value)
    assert "No module named 'clientmod'" in message and "from scaler_aws_batch import Client" in message
    assert "requirements_file" in message and "cannot ship" in message


def test_a_compiled_module_from_the_client_directory_is_named_in_the_error(
    harness: Harness, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What importing clientfast.cpython-...so from the client directory leaves in sys.modules (no compiler needed).
    compiled = ModuleType("clientfast")
    compiled.__file__ = str(tmp_path / "clientfast.cpython-311-x86_64-linux-gnu.so")
    exec("def fast(x):\n    return x\n", compiled.__dict__)
    monkeypatch.setitem(sys.modules, "clientfast", compiled)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(LocalCodeWarning, match="clientfast .* compiled extension module"):
        client = Client(address=harness.adapter.scheduler)
    expected = "compiled extension modules in its directories, which cannot ship with a task: clientfast;"
    with client, pytest.raises(ModuleNotFoundError, match=expected) as caught:
        client.submit(compiled.fast, 1).result(timeout=WAIT_SECONDS)
    assert caught.value.name == "clientfast" and "requirements_file" in str(caught.value)
