"""Settings of ``scaler-batch worker --backend slurm`` (the ``[slurm]`` table of the config file)."""

from __future__ import annotations

import dataclasses
import shlex

from scaler_aws_batch.backends.kind import BackendKind, BackendSetup
from scaler_aws_batch.capabilities import QueueRouting
from scaler_aws_batch.config import Settings, setting
from scaler_aws_batch.worker_settings import WorkerSettings


@dataclasses.dataclass(frozen=True)
class SlurmSettings(Settings):
    section = "slurm"

    partition: str | None = setting(None, "Partition for ordinary tasks.", default_text="the cluster's default")
    gpu_partition: str | None = setting(
        None, "Partition for tasks with the `gpu` capability.", default_text="none: `gpu` tasks are refused"
    )
    on_demand_partition: str | None = setting(
        None,
        "Partition for tasks with the `on_demand` capability (e.g. one without preemption).",
        default_text="none: `on_demand` tasks are refused",
    )
    account: str | None = setting(None, "Account charged for the jobs (`sbatch --account`).")
    qos: str | None = setting(None, "Quality of service of the jobs (`sbatch --qos`).")
    sbatch_arg: tuple[str, ...] = setting(
        (), "Extra `sbatch` argument (repeatable), e.g. `--sbatch-arg=--exclusive`.", metavar="ARG"
    )
    work_dir: str = setting(
        ".scaler-batch/slurm",
        "Directory on a filesystem the compute nodes share: job logs (`logs/`), exit codes (`exit/`) and the "
        "default store. Jobs start in it.",
    )
    store: str | None = setting(
        None,
        "Object store URL every node reaches: `file:///shared/path` or `s3://bucket/prefix`.",
        default_text="`file://<work-dir>/store`",
    )
    slurm_bin: str | None = setting(
        None, "Directory holding `sbatch`, `squeue` and `scancel`.", default_text="found on PATH"
    )
    runner: str | None = setting(
        None,
        "The command that starts `scaler-batch` on the compute nodes, e.g. `/shared/venv/bin/scaler-batch`.",
        default_text="`scaler-batch` next to the worker's Python",
    )


def build_slurm(settings: SlurmSettings, worker: WorkerSettings) -> BackendSetup:
    from scaler_aws_batch.backends.slurm.backend import SlurmBackend
    from scaler_aws_batch.backends.work_dir import open_work_dir

    del worker
    work = open_work_dir(SlurmSettings, settings.work_dir, settings.store)
    backend = SlurmBackend(
        work.path,
        partition=settings.partition,
        account=settings.account,
        qos=settings.qos,
        extra_args=settings.sbatch_arg,
        bin_dir=settings.slurm_bin,
        runner=shlex.split(settings.runner) if settings.runner else None,
        job_env=work.job_env,
    )
    routing = QueueRouting(on_demand=settings.on_demand_partition, gpu=settings.gpu_partition)
    return BackendSetup(backend, work.store, routing, work.keys)


KIND = BackendKind(
    name="slurm",
    settings=SlurmSettings,
    build=build_slurm,
)
