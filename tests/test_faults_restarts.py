"""Fault suite, Scaler's own processes restarting: the object storage server and the scheduler, each ``kill -9`` and
back after ~3 s, with the adapter as its own process on the aws-batch backend (the Batch emulator) and real Scaler
clients. Rows go to ``SCALER_BATCH_RELIABILITY_RECORD`` like tests/test_faults.py's (docs/reliability.md).

Scaler 2.9's scheduler keeps its tasks in memory and never reconnects to its object storage, so the old client's
futures are Scaler's business here: these cases count what the adapter controls (its jobs, a new client's tasks).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import pytest
from scaler import Client

from conftest import WAIT_SECONDS, AdapterProcess, wait_for
from scaler_aws_batch.embedded import free_ports
from scaler_aws_batch.engine import SCALER_RESTARTED_REASON
from test_faults import ADAPTER_ENV, Row, World, count_results_received, trial, work, world

# The fixtures are test_faults.py's (one emulator per module: eight jobs RUNNING at most); pytest uses them from here.
__all__ = ["count_results_received", "world"]

pytestmark = [pytest.mark.e2e, pytest.mark.spread]

#: Trials per case: the timing of a restart against the adapter's backoff varies from one to the next.
TRIALS = 5
#: Longer than the hang guard: a new client's task is served only if the adapter does not hold the old jobs for it.
LONG_GRACE = ["--reattach-grace", "600"]
_OUTAGE = "WARNING scaler_aws_batch.adapter.outage: outage: "
_RECONNECTED = "reconnected after an outage"


def _statuses(world: World, job_ids: list[str]) -> list[tuple[str, str]]:
    jobs = world.emulator.client("batch").describe_jobs(jobs=job_ids)["jobs"]
    return [(job["status"], job.get("statusReason", "")) for job in jobs]


def _close(client: Client) -> None:
    """The old client: its scheduler is gone or broken, so its disconnect may fail; that is Scaler's."""
    with contextlib.suppress(Exception):
        client.disconnect()


@pytest.mark.parametrize("trial_number", range(TRIALS))
def test_object_storage_restart_the_adapter_keeps_its_jobs_and_serves_again(world: World, trial_number: int) -> None:
    row = Row("object storage server kill -9, back after 3 s with its scheduler restarted (docs/operations.md)")
    with trial(world, "storage") as run:
        # A restart grace long enough to see the jobs kept through the loss (5 s by default).
        adapter = run.start_adapter([*LONG_GRACE, "--restart-grace", "20"])
        old_client = Client(address=run.cluster.addresses.scheduler)
        try:
            assert old_client.submit(abs, -1).result(timeout=WAIT_SECONDS) == 1
            gate = str(run.dir / "never")  # the old tasks run until their jobs are stopped
            for key in range(3):
                old_client.submit(work, str(run.dir), key, 0.0, b"", gate)
            wait_for(lambda: world.running_count(run.adapter_id) >= 1, "a RUNNING job")
            old_jobs = world.live_jobs(run.adapter_id)

            run.cluster.kill("object_storage")
            wait_for(lambda: _OUTAGE in adapter.log_text(), "the adapter's outage line")
            # Its jobs are kept (before: stopped at once, and the adapter exited 1 with a traceback).
            assert adapter.process.poll() is None
            assert set(old_jobs) <= set(world.live_jobs(run.adapter_id))
            time.sleep(3)  # the outage
            # Scaler 2.9's scheduler never reconnects to its object storage: restarted with it, as operators do.
            run.cluster.stop_scheduler()
            run.cluster.start_object_storage()
            run.cluster.start_scheduler()
        finally:
            _close(old_client)
        wait_for(lambda: _RECONNECTED in adapter.log_text(), "the adapter to reconnect")
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 4, seconds=0.2)
            wait_for(lambda: not set(old_jobs) & set(world.live_jobs(run.adapter_id)), "the old jobs to be stopped")
            run.settle(row)
        log = adapter.log_text()
    row.record()
    row.assert_clean()
    assert adapter.process.returncode == 0 and "Traceback" not in log
    outage_lines = [line for line in log.splitlines() if _OUTAGE in line]
    assert len(outage_lines) == 1 and "object storage server at tcp://" in outage_lines[0], outage_lines
    # The storage server's process ended with the old tasks' inputs: their jobs were stopped for that, after the grace.
    statuses = _statuses(world, old_jobs)
    assert statuses == [("FAILED", SCALER_RESTARTED_REASON)] * len(old_jobs), statuses
    assert "Scaler's object storage server at tcp://" in log and "will never be sent again" in log


@pytest.mark.parametrize("trial_number", range(TRIALS))
def test_scheduler_restart_releases_the_old_jobs_and_a_new_client_is_served(world: World, trial_number: int) -> None:
    row = Row("scheduler kill -9, back after 3 s, compute full of its jobs: they are stopped, a new client is served")
    capacity = world.emulator.config.max_running_jobs
    with trial(world, "schedfull") as run:
        adapter = run.start_adapter(LONG_GRACE)
        old_client = Client(address=run.cluster.addresses.scheduler)
        try:
            gate = str(run.dir / "never")
            old: list[Any] = [
                old_client.submit(work, str(run.dir), key, 0.0, b"", gate) for key in range(capacity)
            ]  # fmt: skip
            wait_for(lambda: world.running_count(run.adapter_id) == capacity, "the compute environment full")
            old_jobs = world.live_jobs(run.adapter_id)
            run.cluster.kill("scheduler")
            time.sleep(3)
            run.cluster.start_scheduler()
        finally:
            _close(old_client)
        started = time.monotonic()
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 1, seconds=0.0)
            run.settle(row)
        print(f"\nnew client's task served {time.monotonic() - started:.1f}s after the scheduler was back")
        wait_for(lambda: not set(old_jobs) & set(world.live_jobs(run.adapter_id)), "the old jobs to end")
        log = adapter.log_text()
    row.record()
    row.assert_clean()
    assert len(old) == capacity and adapter.process.returncode == 0 and "Traceback" not in log
    statuses = _statuses(world, old_jobs)
    assert statuses == [("FAILED", SCALER_RESTARTED_REASON)] * len(old_jobs), statuses
    assert "will never be sent again" in log
    outage_lines = [line for line in log.splitlines() if _OUTAGE in line]
    assert len(outage_lines) == 1 and "the Scaler scheduler at tcp://" in outage_lines[0], outage_lines


class TcpProxy:
    """A TCP proxy in front of the scheduler, which the test restarts: a connection closed (then refused) while the
    scheduler itself runs on, as a proxy or load balancer between the adapter and Scaler may do."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self._target = (host, int(port))
        self.address = f"tcp://127.0.0.1:{free_ports('127.0.0.1', 1)[0]}"
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(self.address.rsplit(":", 1)[1])))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(self._target)
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("trial_number", range(TRIALS))
def test_a_proxy_closing_the_connection_with_a_restart_grace_above_the_worker_timeout_reattaches(
    world: World, trial_number: int
) -> None:
    """The ambiguous case (docs/reliability.md): the connection closed and refused while the same scheduler runs on
    looks like a restart. With ``--restart-grace`` above the scheduler's worker timeout, the scheduler times the old
    worker identity out and sends its tasks again to the adapter's new one: they re-attach to their jobs, and the
    client gets every result, none run twice."""
    row = Row("a proxy between adapter and scheduler restarts (the same scheduler runs on), --restart-grace 45")
    with trial(world, "proxy") as run:
        proxy = TcpProxy(run.cluster.addresses.scheduler)
        proxy.start()
        work_dir = run.dir / "adapter-proxy"
        adapter = AdapterProcess(proxy.address, work_dir, world.adapter_args(run.adapter_id, [*LONG_GRACE,
                                 "--restart-grace", "45"]), ADAPTER_ENV)  # fmt: skip
        run.adapters.append(adapter)
        try:
            with Client(address=run.cluster.addresses.scheduler) as client:
                run.submit(client, 4, seconds=20.0)
                wait_for(lambda: world.running_count(run.adapter_id) == 4, "every job RUNNING")
                proxy.stop()
                time.sleep(3)
                proxy.start()
                run.settle(row)
        finally:
            proxy.stop()
        log = adapter.log_text()
    row.record()
    row.assert_clean()
    assert "ended (" in log and "attached to its live job" in log and "Traceback" not in log
