"""Fault suite, adapter identity: two adapters started the same way (no ``--name``, no ``--adapter-id``) on one
scheduler and queue, an explicit id already held, and a ``kill -9`` while a SubmitJob is still in flight.

Same harness and counts as tests/test_faults.py (its fixtures and helpers are imported), and each case appends its row
to ``SCALER_BATCH_RELIABILITY_RECORD`` the same way.
"""

from __future__ import annotations

import functools
import re
import signal
from collections.abc import Iterator, Sequence

import pytest
from scaler import Client

from batch_emulator import BatchEmulator, EmulatorConfig
from conftest import AdapterProcess, wait_for
from harness import TIME_SCALE
from test_faults import (
    _STOPPED_AT_SHUTDOWN,
    Row,
    Trial,
    World,
    count_results_received,  # noqa: F401 - an autouse fixture: it counts the results the client received
    trial,
    work,
)

pytestmark = [pytest.mark.e2e, pytest.mark.spread]

_TOOK_STOCK = re.compile(r"took stock for adapter id ([0-9A-Za-z-]+):")
#: Both adapters of a pair take at most this many tasks, so that tasks submitted after the first is full go to the
#: second one: tasks are in flight on both.
_PER_ADAPTER = ["--max-concurrent-jobs", "8", "--queue-size", "8"]
#: Shorter than the scheduler's worker timeout: only where no adapter is killed (a killed adapter's tasks come again
#: after that timeout, and must find their jobs still live).
_SHORT_GRACE = ["--reattach-grace", "5"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """This module's emulator, as tests/test_faults.py builds its own."""
    with BatchEmulator(EmulatorConfig(time_scale=TIME_SCALE, max_running_jobs=16)) as emulator:
        yield World(emulator, tmp_path_factory.mktemp("faults-identity"))


def adapter_id_of(adapter: AdapterProcess) -> str:
    """The id the adapter logged when it took stock (it has, once it is connected)."""
    wait_for(lambda: _TOOK_STOCK.search(adapter.log_text()) is not None, "the adapter to take stock")
    match = _TOOK_STOCK.search(adapter.log_text())
    assert match is not None
    return match.group(1)


def logged(adapter: AdapterProcess, text: str) -> bool:
    return text in adapter.log_text()


def connected(adapter: AdapterProcess) -> None:
    wait_for(lambda: " connected to " in adapter.log_text(), "the adapter to connect")


def count_orphans(run: Trial, adapter_ids: Sequence[str], row: Row) -> None:
    """After the trial's adapters left: the live jobs of these ids that no adapter stopped (``settle`` counts only
    the trial's explicit id)."""
    stopped = {
        job_id.strip()
        for adapter in run.adapters
        for match in _STOPPED_AT_SHUTDOWN.finditer(adapter.log_text())
        for job_id in match.group(1).split(",")
    }
    row.orphans += sum(len(set(run.world.live_jobs(adapter_id)) - stopped) for adapter_id in set(adapter_ids))


def start_pair(
    run: Trial, client: Client, extra: Sequence[str] = ()
) -> tuple[AdapterProcess, AdapterProcess, str, str]:
    """Two adapters started with the same command, 8 tasks in flight on each (held by the trial's gate file)."""
    gate = str(run.dir / "gate")
    first = run.start_adapter([*_PER_ADAPTER, *extra], default_id=True)
    connected(first)
    first_id = adapter_id_of(first)
    run.submit(client, 8, seconds=0.5, gate=gate)
    wait_for(lambda: run.world.running_count(first_id) >= 1, "a RUNNING job of the first adapter")
    second = run.start_adapter([*_PER_ADAPTER, *extra], default_id=True)  # takes stock while the first one's jobs live
    connected(second)
    second_id = adapter_id_of(second)
    # Keys 8..15 (``settle`` expects key * 2 from future number key); to the second adapter: the first one is full.
    run.futures += [client.submit(work, str(run.marks), key, 0.5, b"", gate) for key in range(8, 16)]
    wait_for(lambda: len(run.world.live_jobs(second_id)) >= 1, "a live job of the second adapter")
    return first, second, first_id, second_id


def test_two_adapters_started_the_same_way_take_distinct_ids_and_leave_each_other_alone(world: World) -> None:
    row = Row("two adapters started with the same command (default id), tasks in flight on both")
    with trial(world, "twins") as run:
        with Client(address=run.cluster.addresses.scheduler) as client:
            first, second, first_id, second_id = start_pair(run, client, _SHORT_GRACE)
            assert first_id != second_id
            assert not first_id.startswith(second_id) and not second_id.startswith(first_id)
            assert (
                f"adapter id {first_id} is held by a live adapter on host" in second.log_text()
                and f"(pid {first.process.pid}); this adapter takes id {second_id}" in second.log_text()
            )
            # With a shared id it took stock of the first one's live jobs, and stopped them after its grace (5 s).
            assert f"took stock for adapter id {second_id}: 0 live job(s)" in second.log_text()
            (run.dir / "gate").touch()
            run.settle(row)
        count_orphans(run, [first_id, second_id], row)
        assert all(code == 0 for code in run.exit_codes), run.exit_codes
    row.record()
    row.assert_clean()
    assert row.tasks == 16


def test_one_of_two_twins_killed_and_restarted_takes_back_its_own_id(world: World) -> None:
    row = Row("two adapters started with the same command: one killed -9 and restarted, takes back its id")
    with trial(world, "twinkill") as run:
        with Client(address=run.cluster.addresses.scheduler) as client:
            _, second, first_id, second_id = start_pair(run, client)
            second.process.send_signal(signal.SIGKILL)
            second.process.wait()
            restarted = run.start_adapter(_PER_ADAPTER, default_id=True)
            connected(restarted)
            assert adapter_id_of(restarted) == second_id, "the restarted adapter took back its own slot"
            log = restarted.log_text()
            assert f"adapter id {second_id}: took over the lease of a dead adapter" in log
            assert f"adapter id {first_id} is held by a live adapter" in log
            # Scaler re-sends the killed adapter's tasks after its worker timeout: they attach to their live jobs.
            wait_for(lambda: "attached to its live job" in restarted.log_text(), "a re-sent task to re-attach")
            (run.dir / "gate").touch()
            run.settle(row)
        count_orphans(run, [first_id, second_id], row)
    row.record()
    row.assert_clean()
    assert row.tasks == 16


def test_an_explicit_adapter_id_held_by_a_live_adapter_is_refused_at_start(world: World) -> None:
    row = Row("--adapter-id already held by a live adapter: the second one is refused at start-up")
    with trial(world, "held") as run:
        first = run.start_adapter()
        connected(first)
        second = run.start_adapter()  # the same --adapter-id
        second.process.wait(timeout=120)
        log = second.log_text()
        assert second.process.returncode == 3, log
        assert f"adapter id {run.adapter_id} is held by a live adapter on host" in log
        assert f"(pid {first.process.pid})" in log
        assert "Stop the other adapter, or give this one another --adapter-id" in log
        assert " connected to " not in log, "refused before connecting to the scheduler"
        assert first.process.poll() is None, "the first adapter serves on"
        with Client(address=run.cluster.addresses.scheduler) as client:
            run.submit(client, 4, seconds=0.2)
            run.settle(row)
        assert not row.errors, row
        row.errors[log.strip().splitlines()[-1][:160]] += 1  # what the user saw: the refusal
    row.record()
    row.assert_clean(errors_allowed=True)


#: How long the emulator holds the SubmitJob the killed adapter had sent: longer than the restarted adapter needs to
#: take stock, so that its first look cannot see the job (it lands later, well within the read timeout's window).
_IN_FLIGHT_SECONDS = 20.0
_IN_FLIGHT_TRIALS = 5


def test_kill_9_while_a_submit_job_is_in_flight_then_restart_runs_nothing_twice(world: World) -> None:
    row = Row(
        f"kill -9 while a SubmitJob is in flight (it lands {_IN_FLIGHT_SECONDS:.0f} s later), restart with the same id"
    )
    first_looks_empty = 0
    for number in range(_IN_FLIGHT_TRIALS):
        with trial(world, f"inflight{number}") as run:
            first = run.start_adapter()
            with Client(address=run.cluster.addresses.scheduler) as client:
                connected(first)
                world.emulator.reset_api_calls()
                world.emulator.faults.submit_delay_seconds = _IN_FLIGHT_SECONDS
                # Odd trials: the tasks wait for a gate, so the job that landed late is still live at the second look
                # (adopted, the tasks attach); even trials: it has ended by then (its results are delivered).
                gate = run.dir / "gate" if number % 2 else None
                try:
                    run.submit(client, 10, seconds=1.0, gate=str(gate) if gate else "")
                    wait_for(lambda: world.emulator.api_calls["SubmitJob"] >= 1, "a SubmitJob in flight", interval=0.01)
                    first.process.send_signal(signal.SIGKILL)
                    first.process.wait()
                finally:
                    world.emulator.faults.submit_delay_seconds = 0.0  # the one in flight keeps its delay
                restarted = run.start_adapter()
                connected(restarted)
                first_looks_empty += (
                    f"took stock for adapter id {run.adapter_id}: 0 live job(s)" in restarted.log_text()
                )
                second_look = f"second look for adapter id {run.adapter_id}: "
                if gate is not None:
                    wait_for(
                        functools.partial(logged, restarted, f"{second_look}1 more live job(s)"), "the second look"
                    )
                    gate.touch()
                run.settle(row)
                assert second_look in restarted.log_text()
    row.record()
    assert first_looks_empty == _IN_FLIGHT_TRIALS, "the job landed only after the restarted adapter took stock"
    row.assert_clean()


def test_an_adapter_cut_off_past_its_lease_leaves_its_jobs_to_the_one_that_took_over(world: World) -> None:
    """The first adapter is paused (SIGSTOP) past its lease's TTL; a second one with the same id takes the lease and
    the jobs over. Resumed, the first finds its lease taken: it stops serving and exits 4 without stopping a job."""
    row = Row("an adapter paused past its lease (SIGSTOP), another takes its id over, the first resumes")
    lease = ["--lease-seconds", "3"]
    with trial(world, "paused") as run:
        gate = run.dir / "gate"
        first = run.start_adapter(lease)
        with Client(address=run.cluster.addresses.scheduler) as client:
            connected(first)
            run.submit(client, 8, seconds=0.5, gate=str(gate))
            wait_for(lambda: world.running_count(run.adapter_id) >= 1, "a RUNNING job")
            first.process.send_signal(signal.SIGSTOP)
            try:
                successor = run.start_adapter(lease)
                connected(successor)
            finally:
                first.process.send_signal(signal.SIGCONT)
            assert f"adapter id {run.adapter_id}: took over the lease of a dead adapter" in successor.log_text()
            assert first.process.wait(timeout=120) == 4
            log = first.log_text()
            assert "another adapter took its lease over" in log and "shutdown: stopped" not in log
            gate.touch()
            run.settle(row)
    row.record()
    row.assert_clean()
