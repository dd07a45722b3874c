"""``scaler-batch``: ``demo``, ``worker`` and ``run-job`` (the runner inside each job).

Imports are deferred per subcommand so ``run-job``, which starts once per job, loads only the runner.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

#: Exit codes of ``scaler-batch worker``: a bad flag or setting; a failed start-up check (including an adapter id held
#: by a live adapter); stopped while starting. A running worker whose lease was taken over exits 4
#: (:data:`scaler_aws_batch.adapter.lease_keeper.EXIT_LEASE_LOST`).
EXIT_BAD_SETTINGS = 2
EXIT_STARTUP_CHECK = 3
EXIT_INTERRUPTED = 130

if TYPE_CHECKING:
    from scaler_aws_batch import config
    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.backends.kind import BackendKind, BackendSetup
    from scaler_aws_batch.engine import EngineSettings, JobEngine
    from scaler_aws_batch.lease import Lease
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


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """Everything the worker needs but its adapter id, which the lease decides (:meth:`engine`)."""

    adapter: AdapterSettings
    setup: BackendSetup
    engine_settings: EngineSettings
    usage_log: str | None
    #: The ids to try: the explicit ``--adapter-id`` alone, or the default id's slots.
    candidates: Callable[[], Iterator[str]]
    explicit: bool
    lease_seconds: float

    #: The backend's bound on a dead adapter's submission landing late (``BackendKind.submit_landing_seconds``).
    submit_landing_seconds: float

    def engine(self, adapter_id: str, *, took_over: bool = False) -> JobEngine:
        """The engine under ``adapter_id``. ``took_over``: its lease came from a dead adapter, whose last SubmitJob
        may still land; the engine looks for its jobs once more before submitting tasks sent again."""
        from scaler_aws_batch.engine import JobEngine
        from scaler_aws_batch.usage import UsageRecorder

        settings = dataclasses.replace(
            self.engine_settings,
            adapter_id=adapter_id,
            second_look_after_seconds=self.submit_landing_seconds if took_over else 0.0,
        )
        return JobEngine(self.setup.backend, self.setup.store, settings, self.setup.keys, UsageRecorder(self.usage_log))


def build_worker(worker: WorkerSettings, kind: BackendKind[Any], backend_settings: config.Settings) -> WorkerPlan:
    """The adapter's settings, its backend and the engine's settings. ValueError on bad input."""
    import cloudpickle

    from scaler_aws_batch import config
    from scaler_aws_batch.adapter.worker import AdapterSettings
    from scaler_aws_batch.engine import EngineSettings
    from scaler_aws_batch.lease import slot_ids
    from scaler_aws_batch.reattach import ADAPTER_ID_CHARS, default_adapter_id
    from scaler_aws_batch.tags import merge_user_tags, parse_tag_pairs
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
    inputs = (worker.scheduler, kind.name, setup.deployment, worker.name)
    slot_zero = default_adapter_id(scheduler=inputs[0], backend=inputs[1], queue=inputs[2], name=inputs[3])
    explicit = worker.adapter_id

    def candidates() -> Iterator[str]:
        return iter((explicit,)) if explicit else slot_ids(slot_zero, inputs, ADAPTER_ID_CHARS)

    engine_settings = EngineSettings(
        adapter_id=explicit or slot_zero,
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
    return WorkerPlan(adapter, setup, engine_settings, worker.usage_log, candidates, bool(explicit),
                      worker.lease_seconds, kind.submit_landing_seconds)  # fmt: skip


def run_worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import asyncio

    from scaler_aws_batch.adapter.worker import AdapterWorker

    try:
        worker, kind, backend_settings = load_worker_settings(args, env)
        logging.basicConfig(level=worker.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        plan = build_worker(worker, kind, backend_settings)
    except ValueError as exc:
        print(f"scaler-batch worker: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    outcome = _check_before_serving(plan)
    if isinstance(outcome, int):
        plan.setup.backend.close()
        return outcome
    engine = plan.engine(outcome.adapter_id, took_over=outcome.took_over)
    return asyncio.run(AdapterWorker(plan.adapter, engine, lease=outcome, lease_seconds=plan.lease_seconds).run())


def _check_before_serving(plan: WorkerPlan) -> int | Lease:
    """Run the start-up checks and take the adapter id's lease; an exit code when the worker must not serve.
    SIGTERM/SIGINT stop them at once."""
    import signal
    import threading

    from scaler_aws_batch.errors import StoreError
    from scaler_aws_batch.lease import AdapterIdHeldError, LeaseInterrupted, LeaseTaker
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
    routing = plan.adapter.routing
    try:
        run_startup_checks(
            scheduler=plan.adapter.scheduler_address,
            backend=plan.setup.backend,
            queues=[queue for queue in (routing.on_demand, routing.gpu) if queue],
            store=plan.setup.store,
            scheduler_wait_seconds=SCHEDULER_WAIT_SECONDS,
            stop=stop,
        )
        # Before connecting: an adapter that may not own this id must not take tasks under it.
        return LeaseTaker(plan.setup.store, plan.lease_seconds, stop).take(plan.candidates(), explicit=plan.explicit)
    except (StartupCheckError, AdapterIdHeldError) as exc:
        print(f"scaler-batch worker: {exc}", file=sys.stderr)
        return EXIT_STARTUP_CHECK
    except StoreError as exc:
        print(f"scaler-batch worker: cannot take the adapter id's lease in the store: {exc}", file=sys.stderr)
        return EXIT_STARTUP_CHECK
    except (StartupInterrupted, LeaseInterrupted):
        print(f"scaler-batch worker: stopped by {received[0]} during the start-up checks", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
