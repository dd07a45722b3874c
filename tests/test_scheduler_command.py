"""``scaler-batch scheduler``: Scaler's own scheduler entry point, run as a user would run it, with the fix that lets
task capabilities reach workers under Scaler 2.9.0; and Scaler's unpatched ``scaler_scheduler``, with which the adapter
refuses tasks whose capabilities were lost and says to run ``scaler-batch scheduler``."""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from scaler import Client

from conftest import WAIT_SECONDS, AdapterProcess
from scaler_aws_batch.embedded import free_ports
from scaler_aws_batch.errors import CapabilitiesLostError

pytestmark = pytest.mark.e2e

BIN_DIR = pathlib.Path(sys.executable).parent


@contextlib.contextmanager
def _cluster(log_dir: pathlib.Path, scheduler_command: list[str]) -> Iterator[str]:
    """Scaler's object storage server and a scheduler started from its command line, as a user starts them."""
    storage_port, scheduler_port = free_ports("127.0.0.1", 2)
    storage, scheduler = f"tcp://127.0.0.1:{storage_port}", f"tcp://127.0.0.1:{scheduler_port}"
    with (log_dir / "cluster.log").open("wb") as log:
        processes = [
            subprocess.Popen([str(BIN_DIR / "scaler_object_storage_server"), storage], stdout=log, stderr=log),
            subprocess.Popen(
                [*scheduler_command, scheduler, "--object-storage-address", storage], stdout=log, stderr=log
            ),
        ]
        try:
            yield scheduler
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)


@pytest.fixture
def standalone_cluster(tmp_path: pathlib.Path) -> Iterator[str]:
    with _cluster(tmp_path, [str(BIN_DIR / "scaler-batch"), "scheduler"]) as scheduler:
        yield scheduler


@pytest.fixture
def stock_cluster(tmp_path: pathlib.Path) -> Iterator[str]:
    """Scaler 2.9's own ``scaler_scheduler``, unpatched: it loses every task's capabilities on the way to workers."""
    with _cluster(tmp_path, [str(BIN_DIR / "scaler_scheduler")]) as scheduler:
        yield scheduler


@contextlib.contextmanager
def _local_adapter(scheduler: str, work_dir: pathlib.Path) -> Iterator[tuple[Client, AdapterProcess]]:
    """The adapter on the local backend and a client, both of ``scheduler``; the adapter has stopped after."""
    adapter = AdapterProcess(scheduler, work_dir, ["--backend", "local", "--work-dir", str(work_dir)], {})
    try:
        with Client(address=scheduler) as client:
            yield client, adapter
    finally:
        adapter.stop()


def test_capabilities_reach_the_job_through_the_scheduler_command(
    standalone_cluster: str, tmp_path: pathlib.Path
) -> None:
    work_dir = tmp_path / "work"
    with _local_adapter(standalone_cluster, work_dir) as (client, _):
        future = client.submit_verbose(math.ceil, args=(1.5,), kwargs={}, capabilities={"vcpus": 3, "memory": 512})
        assert future.result(timeout=WAIT_SECONDS) == 2
    (record,) = [json.loads(path.read_text()) for path in (work_dir / "jobs").glob("*.json")]
    assert record["resourceRequirements"] == [{"type": "VCPU", "value": "3"}, {"type": "MEMORY", "value": "512"}]


def test_capabilities_lost_by_scalers_own_scheduler_fail_the_task_with_the_fix(
    stock_cluster: str, tmp_path: pathlib.Path
) -> None:
    work_dir = tmp_path / "work"
    with _local_adapter(stock_cluster, work_dir) as (client, adapter):
        assert client.submit(math.ceil, 1.5).result(timeout=WAIT_SECONDS) == 2  # no capabilities: runs
        for capabilities in ({"vcpus": 3, "memory": 512}, {"timeout": 600}):
            future = client.submit_verbose(math.ceil, args=(1.5,), kwargs={}, capabilities=capabilities)
            with pytest.raises(CapabilitiesLostError, match="run `scaler-batch scheduler`") as caught:
                future.result(timeout=WAIT_SECONDS)
            assert "spelling" not in str(caught.value)
        assert client.submit(math.floor, 2.5).result(timeout=WAIT_SECONDS) == 2  # the adapter keeps serving
    assert adapter.log_text().count("run `scaler-batch scheduler`") == 1, "one warning per adapter run"
    assert len(list((work_dir / "jobs").glob("*.json"))) == 2, "no job for the refused tasks"
