"""Settings of ``scaler-batch worker --backend local`` (the ``[local]`` table of the config file)."""

from __future__ import annotations

import dataclasses
import os

from scaler_aws_batch.backends.kind import BackendKind, BackendSetup
from scaler_aws_batch.capabilities import QueueRouting
from scaler_aws_batch.config import Settings, check_whole, setting, where
from scaler_aws_batch.worker_settings import WorkerSettings


@dataclasses.dataclass(frozen=True)
class LocalSettings(Settings):
    section = "local"

    work_dir: str = setting(
        ".scaler-batch",
        "Holds `logs/<job id>.log`, `jobs/<job id>.json` (the job spec without its payload) and the default store.",
    )
    store: str | None = setting(
        None, "Object store URL: `file:///path` or `s3://bucket/prefix`.", default_text="`file://<work-dir>/store`"
    )
    max_parallel: int | None = setting(
        None, "Job processes running at once; the rest wait RUNNABLE.", default_text="CPU count"
    )
    job_env: tuple[str, ...] = setting(
        (), "Extra environment for job processes (repeatable), e.g. `PYTHONPATH=/src`.", metavar="KEY=VALUE"
    )

    def __post_init__(self) -> None:
        if self.max_parallel is not None:
            check_whole(self, "max_parallel", minimum=1)
        for pair in self.job_env:
            key, sep, _ = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"job_env takes KEY=VALUE ({where(LocalSettings, 'job_env')}), got {pair!r}")

    def job_environment(self) -> dict[str, str]:
        return dict(pair.split("=", 1) for pair in self.job_env)


def build_local(settings: LocalSettings, worker: WorkerSettings) -> BackendSetup:
    from scaler_aws_batch.backends.local.backend import LocalProcessBackend
    from scaler_aws_batch.backends.work_dir import open_work_dir

    work = open_work_dir(LocalSettings, settings.work_dir, settings.store)
    max_parallel = settings.max_parallel or os.cpu_count() or 2
    job_env = {**settings.job_environment(), **work.job_env}
    backend = LocalProcessBackend(
        work.path, max_parallel=max_parallel, job_env=job_env, keep_running_on_close=worker.keep_jobs_on_exit
    )
    return BackendSetup(backend, work.store, QueueRouting(), work.keys, deployment=str(work.path))


KIND = BackendKind(
    name="local",
    settings=LocalSettings,
    build=build_local,
    poll_interval_min_seconds=0.02,
    poll_interval_max_seconds=0.5,
    array_window_seconds=0.02,
    describe_interval_max_seconds=0.5,  # describing local processes costs nothing
)
