"""The Slurm backend against a real one-node cluster: what sbatch receives, one squeue call per round, exit codes,
cancel, and finding its jobs again after a restart. The runner is replaced by a tiny shell command (the ``runner``
setting) so each job's exit code is chosen by its payload; the end-to-end tests run the real runner."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import pytest

from conftest import wait_for
from scaler_aws_batch.backends.base import JobSpec, JobState, JobStatus
from scaler_aws_batch.backends.slurm.backend import SlurmBackend
from scaler_aws_batch.contracts import JobTag
from scaler_aws_batch.errors import BackendError, JobRejectedError
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.usage import ComputeKind
from slurm_cluster import SlurmCluster

#: argv is ``sh -c SCRIPT sh run-job --payload PAYLOAD``: the payload is $3; array children add their index.
SCRIPT = (
    'case "$3" in sleep) sleep 600 ;; odd-fail) exit $(( AWS_BATCH_JOB_ARRAY_INDEX % 2 * 3 )) ;; *) exit "$3" ;; esac'
)
RUNNER = ("sh", "-c", SCRIPT, "sh")
NO_RESOURCES = Resources()
TAGS = {JobTag.ADAPTER_ID: "adapter-1234", JobTag.TASK_ID: "task-1"}


@pytest.fixture
def shims(tmp_path: pathlib.Path, slurm_cluster: SlurmCluster) -> pathlib.Path:
    """A --slurm-bin directory whose commands log each call, then run the real one."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for command in ("sbatch", "squeue", "scancel"):
        real = slurm_cluster.which(command)
        shim = directory / command
        shim.write_text(f'#!/bin/sh\necho {command} >> "{directory}/calls"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return directory


@pytest.fixture
def backend(
    tmp_path: pathlib.Path, shims: pathlib.Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> SlurmBackend:
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return SlurmBackend(tmp_path / "slurm", bin_dir=str(shims), runner=RUNNER)


def _spec(
    payload: str, *, array_size: int | None = None, resources: Resources = NO_RESOURCES, queue: str | None = None
) -> JobSpec:
    return JobSpec("scaler-test", payload, resources, 90, TAGS, array_size=array_size, queue=queue)


def _calls(shims: pathlib.Path, command: str) -> int:
    path = shims / "calls"
    return path.read_text().split().count(command) if path.exists() else 0


def _final(backend: SlurmBackend, ids: Sequence[str]) -> dict[str, JobStatus]:
    statuses: dict[str, JobStatus] = {}

    def done() -> bool:
        statuses.update(backend.describe(ids))
        return all(job_id in statuses and statuses[job_id].state.is_final for job_id in ids)

    wait_for(done, f"jobs {', '.join(ids)} to finish", interval=0.5)
    return statuses


def test_array_and_single_jobs_with_their_exit_codes_in_one_squeue_call(
    backend: SlurmBackend, shims: pathlib.Path
) -> None:
    parent = backend.submit(_spec("odd-fail", array_size=4))
    single = backend.submit(_spec("0"))
    ids = [parent, single, *(f"{parent}:{index}" for index in range(4))]

    statuses = _final(backend, ids)
    before = _calls(shims, "squeue")
    backend.describe(ids)
    assert _calls(shims, "squeue") == before + 1  # every job in flight, one call

    assert statuses[single].state is JobState.SUCCEEDED and statuses[single].exit_code == 0
    summary = statuses[parent].array_summary or {}
    assert (statuses[parent].state, summary[JobState.SUCCEEDED], summary[JobState.FAILED]) == (JobState.FAILED, 2, 2)
    assert [statuses[f"{parent}:{index}"].exit_code for index in range(4)] == [0, 3, 0, 3]
    assert statuses[f"{parent}:1"].state is JobState.FAILED


def test_a_restarted_adapter_finds_its_jobs_again(
    backend: SlurmBackend, tmp_path: pathlib.Path, shims: pathlib.Path, slurm_cluster: SlurmCluster
) -> None:
    parent = backend.submit(_spec("0", array_size=3))
    _final(backend, [parent])
    restarted = SlurmBackend(tmp_path / "slurm", bin_dir=str(shims), runner=RUNNER)  # remembers nothing
    status = restarted.describe([parent])[parent]
    assert status.state is JobState.SUCCEEDED and (status.array_summary or {})[JobState.SUCCEEDED] == 3
    listing = slurm_cluster.run(
        "squeue", "--me", "--noheader", "--array", "--states=all", "-O", "ArrayJobID:|,Name:|,Comment:|"
    )
    mine = [line.split("|") for line in listing.stdout.splitlines() if line.startswith(f"{parent}|")]
    assert len(mine) == 3
    assert all(
        name == "scaler-test" and f"{JobTag.ADAPTER_ID}=adapter-1234" in comment for _, name, comment, *_ in mine
    )


def test_a_restarted_backend_finds_its_live_jobs_and_their_tasks_from_its_job_records(
    backend: SlurmBackend, tmp_path: pathlib.Path, shims: pathlib.Path
) -> None:
    live = backend.submit(
        dataclasses.replace(_spec("sleep", array_size=2), name="scaler-abc-t1-x2", task_ids=("t1", "t2"))
    )
    done = backend.submit(dataclasses.replace(_spec("0"), name="scaler-abc-t3", task_ids=("t3",)))
    other = backend.submit(dataclasses.replace(_spec("sleep"), name="scaler-other-t4", task_ids=("t4",)))
    _final(backend, [done])
    restarted = SlurmBackend(tmp_path / "slurm", bin_dir=str(shims), runner=RUNNER)  # remembers nothing
    try:
        found = {job.job_id: job for job in restarted.find_jobs("scaler-abc-", (None,))}
        assert set(found) == {live, done}  # another adapter's job is not this one's
        assert (found[live].task_ids, found[live].array_size, found[live].state.is_final) == (("t1", "t2"), 2, False)
        assert found[done].state is JobState.SUCCEEDED and found[done].task_ids == ("t3",)
        children = restarted.describe([f"{live}:0", f"{live}:1"])
        assert len(children) == 2 and not any(status.state.is_final for status in children.values())
    finally:
        for job_id in (live, other):
            restarted.cancel(job_id, None, "test over")


def test_a_finished_job_reports_its_usage(backend: SlurmBackend) -> None:
    job = backend.submit(_spec("0", resources=Resources(vcpus=1.5, memory_mib=100), queue="other"))
    usage = _final(backend, [job])[job].usage
    assert usage is not None and usage.compute is ComputeKind.SLURM and backend.compute_kind(None) is ComputeKind.SLURM
    assert (usage.queue, usage.vcpus, usage.memory_mib, usage.attempts) == ("other", 2.0, 100, 1)
    assert usage.started_at is not None and usage.stopped_at is not None and usage.stopped_at >= usage.started_at


def test_resources_timeout_and_partition_reach_slurm(backend: SlurmBackend, slurm_cluster: SlurmCluster) -> None:
    job = backend.submit(_spec("0", resources=Resources(vcpus=1.5, memory_mib=100), queue="other"))
    listing = slurm_cluster.run(
        "squeue",
        "--me",
        "--noheader",
        "--states=all",
        "--jobs",
        job,
        "-O",
        "Partition:|,cpus-per-task:|,MinMemory:|,TimeLimit:|",
    )
    assert listing.stdout.split("|")[:4] == ["other", "2", "100M", "2:00"]  # 1.5 CPUs round up; 90 s is 2 minutes


def test_a_gpu_request_the_cluster_cannot_meet_is_refused_with_sbatch_s_reason(backend: SlurmBackend) -> None:
    with pytest.raises(JobRejectedError, match=r"sbatch refused job scaler-test: .*(gres|Gres|GRES|configuration)"):
        backend.submit(_spec("0", resources=Resources(gpus=1)))


def test_cancel_stops_a_running_job(backend: SlurmBackend, shims: pathlib.Path) -> None:
    job = backend.submit(_spec("sleep"))
    wait_for(
        lambda: (status := backend.describe([job]).get(job)) is not None and status.state is JobState.RUNNING,
        "the job to run",
    )
    backend.cancel(job, JobState.RUNNING, "test")
    status = _final(backend, [job])[job]
    assert status.state is JobState.FAILED and "CANCELLED" in (status.status_reason or "")
    assert _calls(shims, "scancel") == 1


def test_missing_slurm_commands_say_which_setting_to_fix(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BackendError, match=r"/nowhere/sbatch not found.*--slurm-bin"):
        SlurmBackend(tmp_path / "slurm", bin_dir="/nowhere").submit(_spec("0"))
