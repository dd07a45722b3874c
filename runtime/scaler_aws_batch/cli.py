"""``scaler-batch``: ``demo``, ``worker`` and ``run-job`` (the runner inside each job).

Imports are deferred per subcommand so ``run-job``, which starts once per job, loads only the runner.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

#: Exit codes of ``scaler-batch worker``: a bad flag or setting; a failed start-up check; stopped while starting.
EXIT_BAD_SETTINGS = 2
EXIT_STARTUP_CHECK = 3
EXIT_INTERRUPTED = 130

if TYPE_CHECKING:
    from scaler_aws_batch import config
    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.backends.kind import BackendKind
    from scaler_aws_batch.engine import JobEngine
    from scaler_aws_batch.worker_settings import WorkerSettings


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's flags, all generated from the settings declarations (see :mod:`scaler_aws_batch.config`)."""
    from scaler_aws_batch import config
    from scaler_aws_batch.backends.registry import BACKEND_KINDS
    from scaler_aws_batch.worker_settings import WorkerSettings

    parser.add_argument(*config.CONFIG_FLAGS, dest="config", metavar="FILE.toml", help="TOML config file")
    config.add_arguments(WorkerSettings, parser, "adapter (every backend)")
    for kind in BACKEND_KINDS.values():
        config.add_arguments(kind.settings, parser, f"--backend {kind.name}")


def load_worker_settings(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[WorkerSettings, BackendKind[Any], config.Settings]:
    """The worker's settings and its backend's, from flags > environment > config file > defaults."""
    from scaler_aws_batch import config
    from scaler_aws_batch.backends.registry import BACKEND_KINDS
    from scaler_aws_batch.worker_settings import WorkerSettings

    path = config.config_path(args, env) or ""
    data = config.read_config_file(path) if path else {}
    worker: WorkerSettings = config.load(WorkerSettings, args, env, config.file_section(data, WorkerSettings, path))
    sections = {name: config.file_section(data, kind.settings, path) for name, kind in BACKEND_KINDS.items()}
    kind = BACKEND_KINDS.get(worker.backend)
    if kind is None:
        raise ValueError(
            f"unknown backend {worker.backend!r} ({config.where(WorkerSettings, 'backend')}): "
            f"use {', '.join(BACKEND_KINDS)}"
        )
    return worker, kind, kind.load_settings(args, env, sections[kind.name])


def build_worker(
    worker: WorkerSettings, kind: BackendKind[Any], backend_settings: config.Settings
) -> tuple[AdapterSettings, JobEngine]:
    """The adapter settings and its engine. ValueError on bad input."""
    import cloudpickle

    from scaler_aws_batch import config
    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.engine import EngineSettings, JobEngine
    from scaler_aws_batch.reattach import default_adapter_id
    from scaler_aws_batch.tags import merge_user_tags, parse_tag_pairs
    from scaler_aws_batch.usage import UsageRecorder
    from scaler_aws_batch.wire import python_version_tag
    from scaler_aws_batch.worker_settings import WorkerSettings

    if not worker.scheduler:
        raise ValueError("no scheduler address: pass --scheduler tcp://host:port or set SCALER_BATCH_SCHEDULER")
    if worker.job_timeout_seconds < kind.min_timeout_seconds:
        raise ValueError(
            f"job_timeout_seconds must be at least {kind.min_timeout_seconds} on {kind.name} "
            f"({config.where(WorkerSettings, 'job_timeout_seconds')}), got {worker.job_timeout_seconds}"
        )
    setup = kind.build(backend_settings, worker)
    user_tags = merge_user_tags(setup.job_tags, parse_tag_pairs(worker.tags, flag="--tag"))
    engine_settings = EngineSettings(
        adapter_id=worker.adapter_id
        or default_adapter_id(scheduler=worker.scheduler, backend=kind.name, queue=setup.deployment, name=worker.name),
        client_python=worker.client_python or python_version_tag(),
        cloudpickle_version=cloudpickle.__version__,
        job_timeout_seconds=worker.job_timeout_seconds,
        array_window_seconds=kind.array_window_seconds if worker.array_window is None else worker.array_window,
        poll_interval_min_seconds=kind.poll_interval_min_seconds,
        poll_interval_max_seconds=kind.poll_interval_max_seconds,
        describe_interval_max_seconds=(
            kind.describe_interval_max_seconds if worker.describe_interval is None else worker.describe_interval
        ),
        vanish_bound_seconds=worker.vanish_after,
        on_demand_queue=setup.routing.on_demand,
        spot_reclaims_before_on_demand=worker.spot_reclaims_before_on_demand,
        runnable_warn_seconds=worker.runnable_warn_after,
        user_tags=user_tags,
        reattach_grace_seconds=worker.reattach_grace,
        submit_deadline_seconds=worker.submit_deadline,
        queues=tuple(dict.fromkeys((None, setup.routing.on_demand, setup.routing.gpu))),
    )
    adapter = AdapterSettings(
        scheduler_address=worker.scheduler,
        object_storage_address=worker.object_storage,
        name=worker.name,
        max_concurrent_jobs=worker.max_concurrent_jobs,
        task_queue_size=worker.queue_size,
        routing=setup.routing,
        keep_jobs_on_exit=worker.keep_jobs_on_exit,
        shutdown_timeout_seconds=worker.shutdown_timeout,
        restart_grace_seconds=worker.restart_grace,
    )
    return adapter, JobEngine(setup.backend, setup.store, engine_settings, setup.keys, UsageRecorder(worker.usage_log))


def run_worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    from scaler_aws_batch.adapter.worker import AdapterWorker

    try:
        worker, kind, backend_settings = load_worker_settings(args, env)
        logging.basicConfig(level=worker.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        settings, engine = build_worker(worker, kind, backend_settings)
    except ValueError as exc:
        print(f"scaler-batch worker: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    code = _check_before_serving(settings, engine)
    if code is not None:
        engine.backend.close()
        return code
    return asyncio.run(AdapterWorker(settings, engine).run())


def _check_before_serving(settings: AdapterSettings, engine: JobEngine) -> int | None:
    """Run the start-up checks; an exit code when the worker must not serve. SIGTERM/SIGINT stop them at once."""
    import signal
    import threading

    from scaler_aws_batch.startup_checks import (
        SCHEDULER_WAIT_SECONDS,
        StartupCheckError,
        StartupInterrupted,
        run_startup_checks,
    )

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: object) -> None:  # only flags: the checks stop at their next step
        del frame
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_startup_checks(
            scheduler=settings.scheduler_address,
            backend=engine.backend,
            queues=[queue for queue in (settings.routing.on_demand, settings.routing.gpu) if queue],
            store=engine.store,
            scheduler_wait_seconds=SCHEDULER_WAIT_SECONDS,
            stop=stop,
        )
    except StartupCheckError as exc:
        print(f"scaler-batch worker: {exc}", file=sys.stderr)
        return EXIT_STARTUP_CHECK
    except StartupInterrupted:
        print(f"scaler-batch worker: stopped by {received[0]} during the start-up checks", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaler-batch", description="Run Scaler tasks on AWS Batch or locally.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a sample workload (local jobs, or AWS Batch emulated locally)")
    demo.add_argument("--scheduler", default=None, help="use this running scheduler instead of an embedded one")
    demo.add_argument("--tasks", type=int, default=24, help="how many CPU-bound tasks to map (24)")
    demo.add_argument("--keep-work-dir", action="store_true", help="keep job logs and the store after the run")
    demo.add_argument(
        "--backend",
        choices=("local", "aws-batch"),
        default="local",
        help="local job processes (default), or AWS Batch through the Batch emulator on this machine (no account)",
    )

    worker = commands.add_parser("worker", help="serve a Scaler scheduler, running each task as a job")
    add_worker_arguments(worker)

    usage = commands.add_parser("usage", help="summarize a --usage-log file: tasks, resource-hours, estimated cost")
    usage.add_argument("file", help="the JSON-lines file the worker's --usage-log wrote")
    usage.add_argument("--prices", default=None, metavar="FILE.json", help="price table (default: built-in estimates)")
    usage.add_argument("--chart", default=None, metavar="OUT.png", help="also write the run's cost over time (PNG)")

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
    if args.command == "usage":
        from scaler_aws_batch.usage_report import run_usage_report

        try:
            run_usage_report(args.file, prices_path=args.prices, chart_path=args.chart, out=sys.stdout)
        except ValueError as exc:
            print(f"scaler-batch usage: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "demo":
        from scaler_aws_batch.demo import run_demo

        return run_demo(
            scheduler=args.scheduler, tasks=args.tasks, keep_work_dir=args.keep_work_dir, backend=args.backend
        )
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
