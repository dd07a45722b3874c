"""``scaler-batch scheduler``: Scaler's own scheduler entry point, run as a user would run it, with the fix that lets
task capabilities reach workers under Scaler 2.9.0."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from scaler import Client
from scaler.utility.network_util import get_available_tcp_port

from conftest import WAIT_SECONDS, AdapterProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def standalone_cluster(tmp_path: pathlib.Path) -> Iterator[str]:
    storage = f"tcp://127.0.0.1:{get_available_tcp_port()}"
    scheduler = f"tcp://127.0.0.1:{get_available_tcp_port()}"
    bin_dir = pathlib.Path(sys.executable).parent
    with (tmp_path / "cluster.log").open("wb") as log:
        processes = [
            subprocess.Popen([str(bin_dir / "scaler_object_storage_server"), storage], stdout=log, stderr=log),
            subprocess.Popen(
                [str(bin_dir / "scaler-batch"), "scheduler", scheduler, "--object-storage-address", storage],
                stdout=log,
                stderr=log,
            ),
        ]
        try:
            yield scheduler
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)


def test_capabilities_reach_the_job_through_the_scheduler_command(
    standalone_cluster: str, tmp_path: pathlib.Path
) -> None:
    work_dir = tmp_path / "work"
    adapter = AdapterProcess(standalone_cluster, work_dir, ["--backend", "local", "--work-dir", str(work_dir)], {})
    try:
        with Client(address=standalone_cluster) as client:
            future = client.submit_verbose(math.ceil, args=(1.5,), kwargs={}, capabilities={"vcpus": 3, "memory": 512})
            assert future.result(timeout=WAIT_SECONDS) == 2
    finally:
        adapter.stop()
    (record,) = [json.loads(path.read_text()) for path in (work_dir / "jobs").glob("*.json")]
    assert record["resourceRequirements"] == [{"type": "VCPU", "value": "3"}, {"type": "MEMORY", "value": "512"}]
