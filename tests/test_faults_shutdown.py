"""Fault suite, shutdown: SIGTERM while many single jobs are live. The adapter stops every one of them, arrays or
not, at the backend's stop budget within the bound it logs, and exits 0; nothing is left running for nobody.

It reuses test_faults.py's module emulator, trials and rows (fixtures imported here are this module's own)."""

from __future__ import annotations

import re
import signal

import pytest
from scaler import Client

from conftest import WAIT_SECONDS, wait_for
from scaler_aws_batch.aws_calls import STOP_JOB_TPS
from scaler_aws_batch.engine.stopping import stop_bound_seconds
from test_faults import Row, World, count_results_received, trial, work, world

__all__ = ["count_results_received", "world"]  # fixtures: pytest finds them by their names in this module

pytestmark = [pytest.mark.e2e, pytest.mark.spread]

JOBS = 200
_STOPPED = re.compile(r"shutdown: stopped (\d+) job\(s\)(?:: ([^;\n]+))?")


def test_sigterm_with_200_single_jobs_live_stops_every_one(world: World) -> None:
    """200 tasks with 200 distinct timeouts: 200 single jobs (no two can share an array), 8 running and the rest
    waiting for capacity when SIGTERM comes."""
    row = Row(f"SIGTERM with {JOBS} single jobs live (distinct timeouts): every job stopped")
    with trial(world, "stop200") as run:
        adapter = run.start_adapter()
        gate = run.dir / "gate"  # never created: a task runs until its job is stopped
        with Client(address=run.cluster.addresses.scheduler) as client:
            world.emulator.reset_api_calls()
            run.futures += [
                client.submit_verbose(
                    work,
                    args=(str(run.marks), key, 0.0, b"", str(gate)),
                    kwargs={},
                    capabilities={"timeout": 3600 + key},  # distinct: one single job per task
                )
                for key in range(JOBS)
            ]
            wait_for(lambda: world.emulator.api_calls["SubmitJob"] >= JOBS, f"{JOBS} SubmitJob calls")
            wait_for(lambda: len(world.live_jobs(run.adapter_id)) >= JOBS, f"{JOBS} live jobs")
            adapter.process.send_signal(signal.SIGTERM)
            adapter.process.wait(timeout=WAIT_SECONDS)  # a hang guard only
            log = adapter.log_text()
            bound = stop_bound_seconds(JOBS, STOP_JOB_TPS)
            assert f"shutdown: stopping {JOBS} job(s) (0 array(s), {JOBS} single), expected within {bound:.0f} s" in log
            match = _STOPPED.search(log)
            assert match is not None, log[-2000:]
            stopped = {job_id.strip() for job_id in (match.group(2) or "").split(",") if job_id.strip()}
            row.trials, row.tasks = 1, JOBS
            row.orphans = len(set(world.live_jobs(run.adapter_id)) - stopped)
            row.run_twice = sum(count > 1 for count in run.executions().values())
            row.record()
            assert adapter.process.returncode == 0, "every job was stopped, so the adapter exits 0"
            assert int(match.group(1)) == JOBS and "could NOT stop" not in log and "handed over" not in log
            assert row.orphans == 0 and row.run_twice == 0, row
            # Every job ends (the ones that were running get their SIGTERM first): none is left running.
            wait_for(lambda: not world.live_jobs(run.adapter_id), "every stopped job to end")
            for future in run.futures:
                future.cancel()
