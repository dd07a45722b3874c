"""Shared fixtures: a real Scaler scheduler, a real adapter process, and a client.

Nothing here replaces project code: the adapter is ``python -m scaler_aws_batch worker`` in its own process.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from scaler import Client

from scaler_aws_batch.embedded import EmbeddedScheduler
from slurm_cluster import SlurmCluster, missing_programs

REPO = pathlib.Path(__file__).resolve().parent.parent
#: Generous bound for things to happen in tests; tests never assert on durations.
WAIT_SECONDS = 120.0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class AdapterProcess:
    """``scaler-batch worker`` as a subprocess with its log in ``work_dir/adapter.log``."""

    def __init__(self, scheduler: str, work_dir: pathlib.Path, extra_args: Sequence[str], env: dict[str, str]) -> None:
        self.work_dir = work_dir
        self.scheduler = scheduler
        self.log_path = work_dir / "adapter.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scaler_aws_batch", "worker", "--scheduler", scheduler, *extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def scaler_with_adapter(
    work_dir: pathlib.Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None, probe: bool = True
) -> Iterator[tuple[Client, AdapterProcess]]:
    """A scheduler, one adapter and a connected client; with ``probe``, the adapter answered a task before this
    yields."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedScheduler(log_path=str(work_dir / "scheduler.log")) as cluster:
        adapter = AdapterProcess(cluster.addresses.scheduler, work_dir, extra_args, env or {})
        try:
            with Client(address=cluster.addresses.scheduler) as client:
                if probe:
                    assert client.submit(abs, -1).result(timeout=WAIT_SECONDS) == 1, "the adapter never answered"
                yield client, adapter
        finally:
            adapter.stop()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Parallel runs (pytest-xdist, ``--dist loadgroup``): the tests that share a module-scoped fixture's instance run
    on one worker, in order, so that the fixture (a CDK synth, a harness with its scheduler and adapter) is built once
    per run; one group per parameter of such a fixture (``test_e2e:harness=slurm``). A module marked ``spread``
    builds its cheap module fixture on each worker it lands on instead, and its tests spread over the workers."""
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("spread"):
            continue
        definitions = item._fixtureinfo.name2fixturedefs
        shared = sorted(
            name for name in item.fixturenames if name in definitions and definitions[name][-1].scope != "function"
        )
        if not shared:
            continue
        callspec = getattr(item, "callspec", None)
        params = [f"{name}={callspec.params[name]}" for name in shared if callspec and name in callspec.params]
        # No "]" at the end: pytest-xdist would take the group for part of a parametrized test's id.
        item.add_marker(pytest.mark.xdist_group(":".join([item.module.__name__, *params])))


#: Set (CI does, in .ci/run) to make a missing Slurm a test failure instead of a skip.
REQUIRE_SLURM_ENV = "SCALER_BATCH_REQUIRE_SLURM"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node Slurm cluster for the session (see tests/slurm_cluster.py), stopped at the end."""
    missing = missing_programs()
    if missing:
        message = f"Slurm is not installed (missing {', '.join(missing)}): run make slurm-install as root"
        if os.environ.get(REQUIRE_SLURM_ENV) or os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def job_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The job image built from the default cloud assembly's asset (cdk.json's context), as `make image` builds it;
    skips without podman (fails on CI)."""
    from job_image import require_image_tools, synth_and_build

    require_image_tools()
    built = synth_and_build(tmp_path_factory.mktemp("image-assembly"), "scaler-batch-runner:test")
    return str(built["tag"])
