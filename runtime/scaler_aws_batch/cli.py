"""``scaler-batch``: ``demo``, ``worker`` and ``run-job`` (the runner inside each job).

Imports are deferred per subcommand so ``run-job``, which starts once per job, loads only the runner.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.engine import JobEngine


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    from scaler_aws_batch.backends.registry import BACKEND_KINDS, DEFAULT_BACKEND

    common = parser.add_argument_group("adapter")
    common.add_argument("--scheduler", default=None, help="scheduler address, e.g. tcp://127.0.0.1:2345")
    common.add_argument("--object-storage", default=None, help="object storage address (default: from scheduler)")
    common.add_argument(
        "--backend", choices=tuple(BACKEND_KINDS), default=None, help=f"where jobs run ({DEFAULT_BACKEND})"
    )
    common.add_argument("--client-python", default=None, help="clients' Python major.minor (default: this one)")
    common.add_argument("--array-window", type=float, default=None, help="seconds to gather tasks into arrays")
    common.add_argument("--queue-size", type=int, default=None, help="tasks the scheduler may hand over (2x jobs)")
    common.add_argument("--vanish-after", type=float, default=None, help="fail a job unseen this long (60 s)")
    common.add_argument("--name", default="", help="worker name shown by the scheduler")
    common.add_argument("--adapter-id", default=None, help="names and tags every job (default: see reliability.md)")
    common.add_argument("--reattach-grace", type=float, default=None, help="wait for re-sent tasks (180 s)")
    common.add_argument("--submit-deadline", type=float, default=None, help="retry submits through outages (600 s)")
    common.add_argument("--shutdown-timeout", type=float, default=None, help="bound on stopping jobs at exit (60 s)")
    common.add_argument("--keep-jobs-on-exit", action="store_true", help="leave jobs running for a re-attach")
    common.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    for kind in BACKEND_KINDS.values():
        kind.add_arguments(parser)


def build_worker(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[AdapterSettings, JobEngine]:
    """Turn flags (and SCALER_BATCH_* variables) into the adapter settings and its engine. ValueError on bad input."""
    import cloudpickle

    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.backends.registry import BACKEND_KINDS, DEFAULT_BACKEND
    from scaler_aws_batch.engine import EngineSettings, JobEngine
    from scaler_aws_batch.reattach import default_adapter_id
    from scaler_aws_batch.wire import python_version_tag

    scheduler = args.scheduler or env.get("SCALER_BATCH_SCHEDULER")
    if not scheduler:
        raise ValueError("no scheduler address: pass --scheduler tcp://host:port or set SCALER_BATCH_SCHEDULER")
    backend_name = args.backend or env.get("SCALER_BATCH_BACKEND", DEFAULT_BACKEND)
    client_python = args.client_python or env.get("SCALER_BATCH_CLIENT_PYTHON") or python_version_tag()
    if not client_python.replace(".", "").isdigit() or client_python.count(".") != 1:
        raise ValueError(f"--client-python takes major.minor like 3.11, got {client_python!r}")
    kind = BACKEND_KINDS.get(backend_name)
    if kind is None:
        raise ValueError(f"unknown backend {backend_name!r}: use {' or '.join(BACKEND_KINDS)}")
    setup = kind.build(args, env)

    adapter_id = (
        args.adapter_id
        or env.get("SCALER_BATCH_ADAPTER_ID")
        or default_adapter_id(scheduler=scheduler, backend=backend_name, queue=setup.deployment, name=args.name)
    )

    def seconds(flag: str, value: float | None, default: float) -> float:
        if value is None:
            return default
        if value < 0:
            raise ValueError(f"{flag} takes seconds, zero or more, got {value}")
        return value

    engine_settings = EngineSettings(
        adapter_id=adapter_id,
        client_python=client_python,
        cloudpickle_version=cloudpickle.__version__,
        job_timeout_seconds=setup.job_timeout_seconds,
        array_window_seconds=args.array_window if args.array_window is not None else setup.array_window_seconds,
        poll_interval_min_seconds=setup.poll_interval_min_seconds,
        poll_interval_max_seconds=setup.poll_interval_max_seconds,
        vanish_bound_seconds=args.vanish_after if args.vanish_after is not None else 60.0,
        reattach_grace_seconds=seconds("--reattach-grace", args.reattach_grace, 180.0),
        submit_deadline_seconds=seconds("--submit-deadline", args.submit_deadline, 600.0),
        queues=tuple(dict.fromkeys((None, setup.routing.on_demand, setup.routing.gpu))),
    )
    adapter = AdapterSettings(
        scheduler_address=scheduler,
        object_storage_address=args.object_storage,
        name=args.name,
        max_concurrent_jobs=setup.max_concurrent_jobs,
        task_queue_size=args.queue_size or 0,
        routing=setup.routing,
        keep_jobs_on_exit=args.keep_jobs_on_exit,
        shutdown_timeout_seconds=seconds("--shutdown-timeout", args.shutdown_timeout, 60.0),
    )
    return adapter, JobEngine(setup.backend, setup.store, engine_settings)


def run_worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    from scaler_aws_batch.adapter.worker import AdapterWorker

    logging.basicConfig(
        level=(args.log_level or env.get("SCALER_BATCH_LOG_LEVEL") or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings, engine = build_worker(args, env)
    except ValueError as exc:
        print(f"scaler-batch worker: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(AdapterWorker(settings, engine).run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaler-batch", description="Run Scaler tasks on AWS Batch or locally.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a sample workload on the embedded local default")
    demo.add_argument("--scheduler", default=None, help="use this running scheduler instead of an embedded one")
    demo.add_argument("--tasks", type=int, default=24, help="how many CPU-bound tasks to map (24)")
    demo.add_argument("--keep-work-dir", action="store_true", help="keep job logs and the store after the run")

    worker = commands.add_parser("worker", help="serve a Scaler scheduler, running each task as a job")
    add_worker_arguments(worker)

    commands.add_parser("scheduler", help="scaler_scheduler with the capability-forwarding fix", add_help=False)
    run_job = commands.add_parser("run-job", help="the runner a job executes", add_help=False)
    run_job.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run-job"]:  # the hot path: one per job, no other imports
        from scaler_aws_batch.runner import main as runner_main

        return runner_main(arguments[1:])
    if arguments[:1] == ["scheduler"]:  # Scaler's scheduler, its own flags, with the capability fix
        from scaler_aws_batch.scaler_compat import run_patched_scheduler

        return run_patched_scheduler(arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command == "worker":
        return run_worker(args, os.environ)
    if args.command == "demo":
        from scaler_aws_batch.demo import run_demo

        return run_demo(scheduler=args.scheduler, tasks=args.tasks, keep_work_dir=args.keep_work_dir)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
