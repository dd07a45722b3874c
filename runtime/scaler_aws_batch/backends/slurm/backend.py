"""The Slurm implementation of :class:`~scaler_aws_batch.backends.base.JobBackend`: sbatch, squeue, scancel.

Each job is a batch script that sets the ``AWS_BATCH_JOB_*`` variables the runner reads from Slurm's own, runs the
same runner command as every backend, and writes its exit code and start and stop times to ``exit/<job id>`` in the
working directory (a shared filesystem), so a job squeue no longer lists is still resolved without accounting
(``sacct``), and its usage is recorded. Array children are ``<array job id>:<index>`` here and
``<array job id>_<index>`` to Slurm. One squeue call per round describes every job in flight. Each job's spec (with
its task ids, without its payload) goes to ``jobs/<job id>.json`` (:mod:`..job_records`): a restarted adapter on the
same directory finds its live jobs there (:meth:`SlurmBackend.find_jobs`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Final

from scaler_aws_batch.backends.base import (
    JobBackend,
    JobSpec,
    JobState,
    JobStatus,
    ListedJob,
    array_parent_status,
    runner_argv,
    runner_overrides_length,
    tail_lines,
)
from scaler_aws_batch.backends.job_records import read_job_records, write_job_record
from scaler_aws_batch.contracts import StatusReason
from scaler_aws_batch.errors import BackendError, BackendUnavailableError, JobRejectedError
from scaler_aws_batch.resources import Resources
from scaler_aws_batch.usage import ComputeKind, JobUsage

logger = logging.getLogger(__name__)

_FIELDS: Final = "ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,exit_code:|"
_STATES: Final = {
    "PENDING": JobState.RUNNABLE, "REQUEUED": JobState.RUNNABLE, "CONFIGURING": JobState.STARTING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED,
}  # fmt: skip
#: Final Slurm states and the reason the engine sees (it classifies timeouts and out-of-memory by these).
_FAILED_REASONS: Final = {"TIMEOUT": StatusReason.TIMEOUT, "OUT_OF_MEMORY": "OutOfMemory: Slurm's memory limit"}
_SCRIPT: Final = """#!/bin/sh
{exports}export AWS_BATCH_JOB_ID="${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}${{SLURM_ARRAY_TASK_ID:+:$SLURM_ARRAY_TASK_ID}}"
if [ -n "${{SLURM_ARRAY_TASK_ID:-}}" ]; then export AWS_BATCH_JOB_ARRAY_INDEX="$SLURM_ARRAY_TASK_ID"; fi
export AWS_BATCH_JOB_ATTEMPT=$((${{SLURM_RESTART_COUNT:-0}} + 1))
started=$(date +%s.%N)
{command}
code=$?
exit_file={exit_dir}/"$AWS_BATCH_JOB_ID"
printf '%s %s %s\\n' "$code" "$started" "$(date +%s.%N)" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"
exit "$code"
"""


def _exit_code(raw: str) -> int | None:
    """squeue's ``exit_code`` is the wait status: the code in the high byte, a killing signal in the low bits."""
    if not raw.isdigit():
        return None
    status = int(raw)
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


class SlurmBackend(JobBackend):
    max_describe_batch = 100_000  # squeue lists all of this user's jobs at once: one call per round

    def __init__(
        self,
        work_dir: pathlib.Path,
        *,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        extra_args: Sequence[str] = (),
        bin_dir: str | None = None,
        runner: Sequence[str] | None = None,
        job_env: Mapping[str, str] | None = None,
    ) -> None:
        self._dir = work_dir
        self._job_env = dict(job_env or {})
        for name in ("logs", "exit", "jobs"):
            (work_dir / name).mkdir(parents=True, exist_ok=True)
        self._partition, self._account, self._qos = partition, account, qos
        self._extra = list(extra_args)
        self._bin = bin_dir
        self._runner = list(runner) if runner else None
        self._arrays: dict[str, int] = {}  # array job id -> size, for children squeue no longer lists
        self._requests: dict[str, tuple[str | None, Resources]] = {}  # job id -> (partition, resources), for usage

    @property
    def name(self) -> str:
        return "slurm"

    def _run(self, command: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        path = str(pathlib.Path(self._bin) / command) if self._bin else command
        try:
            return subprocess.run([path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise BackendError(f"{path} not found: install Slurm's commands or set --slurm-bin") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendUnavailableError(f"{command} did not answer in 60 s", hint="is slurmctld up?") from exc

    def submit(self, spec: JobSpec) -> str:
        argv = runner_argv(spec) if self._runner is None else [*self._runner, *runner_argv(spec)[1:]]
        exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in self._job_env.items())
        script = _SCRIPT.format(
            exports=exports, command=shlex.join(argv), exit_dir=shlex.quote(str(self._dir / "exit"))
        )
        comment = ",".join(f"{key}={value}" for key, value in sorted(spec.tags.items()))
        args = [
            "--parsable", f"--job-name={spec.name}", f"--comment={comment}", f"--chdir={self._dir}",
            f"--time={max(1, math.ceil(spec.timeout_seconds / 60))}",  # Slurm counts whole minutes
            f"--output={self._dir / 'logs' / ('%A_%a.log' if spec.array_size else '%j.log')}",
        ]  # fmt: skip
        optional = {"partition": spec.queue or self._partition, "account": self._account, "qos": self._qos}
        args += [f"--{flag}={value}" for flag, value in optional.items() if value]
        if spec.resources.vcpus is not None:
            args.append(f"--cpus-per-task={math.ceil(spec.resources.vcpus)}")
        if spec.resources.memory_mib is not None:
            args.append(f"--mem={spec.resources.memory_mib}M")
        if spec.resources.gpus:
            args.append(f"--gres=gpu:{spec.resources.gpus}")
        if spec.array_size:
            args.append(f"--array=0-{spec.array_size - 1}")
        result = self._run("sbatch", *args, *self._extra, stdin=script)
        if result.returncode != 0:
            raise JobRejectedError(f"sbatch refused job {spec.name}: {result.stderr.strip()[-500:]}")
        job_id = result.stdout.strip().split(";")[0]
        write_job_record(self._dir / "jobs", job_id, dataclasses.replace(spec, queue=optional["partition"]))
        self._remember(job_id, spec.array_size, optional["partition"], spec.resources)
        logger.info("submitted Slurm job %s (%s, array size %s)", job_id, spec.name, spec.array_size)
        return job_id

    def describe(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        result = self._run("squeue", "--me", "--noheader", "--array", "--states=all", "-O", _FIELDS)
        if result.returncode != 0:
            raise BackendUnavailableError(f"squeue failed: {result.stderr.strip()[-300:]}", hint="is slurmctld up?")
        seen: dict[str, JobStatus] = {}
        children: dict[str, list[JobStatus]] = {}
        for line in result.stdout.splitlines():
            array_id, task, state, reason, raw_code = line.split("|")[:5]
            job_id = array_id if task == "N/A" else f"{array_id}:{task}"
            seen[job_id] = self._status(job_id, state, reason, _exit_code(raw_code))
            if task != "N/A":
                children.setdefault(array_id, []).append(seen[job_id])
        out: dict[str, JobStatus] = {}
        for job_id in job_ids:
            if ":" not in job_id and (job_id in children or job_id in self._arrays):
                out[job_id] = self._array_status(job_id, children.get(job_id, []))
            elif (status := seen.get(job_id) or self._from_exit_file(job_id)) is not None:
                out[job_id] = status
        return out

    def _remember(self, job_id: str, array_size: int | None, partition: str | None, resources: Resources) -> None:
        if array_size:
            self._arrays[job_id] = array_size
        self._requests[job_id] = (partition, resources)

    def _status(self, job_id: str, state: str, reason: str, exit_code: int | None) -> JobStatus:
        mapped = _STATES.get(state.split()[0], JobState.FAILED)
        failure = _FAILED_REASONS.get(state, f"Slurm job {state} ({reason})") if mapped is JobState.FAILED else None
        attempts = 1 if mapped.is_final else 0
        usage = self._usage(job_id) if mapped.is_final else None
        return JobStatus(job_id, mapped, failure, exit_code, attempts, log_location=str(self._log_path(job_id)),
                         usage=usage)  # fmt: skip

    def _exit_file(self, job_id: str) -> list[str]:
        """The exit file's fields (exit code, start and stop times in epoch seconds); none before the job ends."""
        try:
            return (self._dir / "exit" / job_id).read_text().split()
        except FileNotFoundError:
            return []

    def _from_exit_file(self, job_id: str) -> JobStatus | None:
        fields = self._exit_file(job_id)
        if not fields or not fields[0].lstrip("-").isdigit():
            return None
        code = int(fields[0])
        state = "COMPLETED" if code == 0 else "FAILED"
        return self._status(job_id, state, "from the job's exit file", code)

    def _usage(self, job_id: str) -> JobUsage:
        """What a finished job (or array child) used: its request, and its run time from its exit file."""
        partition, resources = self._requests.get(job_id.split(":")[0], (self._partition, Resources()))
        started: float | None = None
        stopped: float | None = None
        try:
            started, stopped = (float(value) for value in self._exit_file(job_id)[1:3])
        except ValueError:  # killed before it wrote its exit file (or an exit file of an older version)
            pass
        ran = started is not None and stopped is not None
        return JobUsage(
            queue=partition,
            compute=ComputeKind.SLURM,
            vcpus=float(math.ceil(resources.vcpus)) if resources.vcpus is not None else 1.0,  # Slurm's default
            memory_mib=resources.memory_mib or 0,
            gpus=resources.gpus or 0,
            attempts=1,
            started_at=started,
            stopped_at=stopped,
            run_seconds=max(0.0, (stopped or 0.0) - (started or 0.0)) if ran else 0.0,
        )

    def _array_status(self, parent_id: str, listed: list[JobStatus]) -> JobStatus:
        known = {status.job_id: status.state for status in listed}
        for child in (f"{parent_id}:{index}" for index in range(self._arrays.get(parent_id, 0))):
            if child not in known:
                from_file = self._from_exit_file(child)
                known[child] = from_file.state if from_file else JobState.RUNNABLE
        return array_parent_status(parent_id, known.values())

    def find_jobs(self, name_prefix: str, queues: Sequence[str | None]) -> list[ListedJob]:
        """This work directory's jobs whose name starts with ``name_prefix``, from their job records, with their
        states from squeue (every partition: the records name the jobs)."""
        del queues
        records = read_job_records(self._dir / "jobs", name_prefix)
        for record in records:
            self._remember(record.job_id, record.array_size, record.queue, record.resources)
        statuses = self.describe([record.job_id for record in records])
        return [
            ListedJob(record.job_id, record.name, status.state, record.array_size, task_ids=record.task_ids or None)
            for record in records
            if (status := statuses.get(record.job_id)) is not None  # neither listed nor ended: Slurm forgot it
        ]

    def compute_kind(self, compute_environment: str | None) -> ComputeKind:
        return ComputeKind.SLURM

    def cancel(self, job_id: str, state: JobState | None, reason: str) -> None:
        result = self._run("scancel", job_id.replace(":", "_"))
        logger.info("scancel %s (%s): exit %d %s", job_id, reason, result.returncode, result.stderr.strip()[-200:])

    def overrides_length(self, spec: JobSpec) -> int:
        return runner_overrides_length(spec)

    def _log_path(self, job_id: str) -> pathlib.Path:
        return self._dir / "logs" / f"{job_id.replace(':', '_')}.log"

    def log_tail(self, job_id: str, lines: int) -> list[str]:
        return tail_lines(self._log_path(job_id), lines)
