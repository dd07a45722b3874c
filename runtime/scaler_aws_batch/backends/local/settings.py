"""Settings of ``scaler-batch worker --backend local``."""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Mapping, Sequence

from scaler_aws_batch.backends.kind import BackendKind, BackendSetup

DEFAULT_WORK_DIR = ".scaler-batch"


def _positive_int(flag: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{flag} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{flag} must be positive, got {number}")
    return number


def _parse_env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--job-env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def add_local_arguments(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("local backend")
    local.add_argument("--work-dir", default=None, help=f"job logs, specs and the store ({DEFAULT_WORK_DIR})")
    local.add_argument("--store", default=None, help="object store URL (default file://<work-dir>/store)")
    local.add_argument("--max-parallel", default=None, help="jobs running at once (default: CPU count)")
    local.add_argument("--job-env", action="append", default=[], metavar="KEY=VALUE", help="extra job environment")


def build_local(args: argparse.Namespace, env: Mapping[str, str]) -> BackendSetup:
    from scaler_aws_batch.adapter.task_manager import QueueRouting
    from scaler_aws_batch.backends.local.backend import LocalProcessBackend
    from scaler_aws_batch.stores import open_store

    work_dir = pathlib.Path(args.work_dir or env.get("SCALER_BATCH_WORK_DIR") or DEFAULT_WORK_DIR).resolve()
    store = open_store(args.store or (work_dir / "store").as_uri())
    max_parallel = _positive_int("--max-parallel", args.max_parallel, os.cpu_count() or 2)
    backend = LocalProcessBackend(
        work_dir, max_parallel=max_parallel, job_env=_parse_env_pairs(args.job_env),
        keep_running_on_close=getattr(args, "keep_jobs_on_exit", False),
    )  # fmt: skip
    max_jobs = _positive_int("--max-concurrent-jobs", args.max_concurrent_jobs, 1000)
    timeout = _positive_int("--job-timeout", args.job_timeout_seconds, 3600)
    return BackendSetup(backend, store, max_jobs, timeout, QueueRouting(), 0.02, 0.5, 0.02, str(work_dir))


KIND = BackendKind(name="local", add_arguments=add_local_arguments, build=build_local)
