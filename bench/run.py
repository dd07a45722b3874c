"""``python -m bench.run [--quick] [--setups ...] [--json out.json]``: every workload on every setup.

Setups (each step gets a fresh scheduler, and a fresh Batch emulator where there is one):

- ``ours``: this project's adapter (``scaler-batch worker --backend aws-batch``) on the emulator, whose jobs run the
  runner in-process (``execution="thread"``) so that the adapter's costs show rather than Python start-ups.
- ``stock``: Scaler 2.9's own ``aws_batch`` worker on the emulator. Its job runner sets signal handlers and reads
  ``os.environ``, so it cannot run on a thread: its jobs are processes, and its workloads are smaller.
- ``native``: Scaler with two native local workers, no Batch: the ceiling.
- ``ceiling``: ours on an emulator with no state delays and 64 jobs at once: what the adapter alone can do.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import pathlib
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import Any

from bench import native, ours, scenarios, stock
from bench.common import Cluster, EmulatorSettings, describe_error, load_average
from bench.emulator_process import EmulatorProcess

Scenario = Callable[[Cluster], dict[str, Any]]
#: Free ports are picked, then bound: on a busy machine another program may take one in between.
SETUP_ATTEMPTS = 2


@dataclasses.dataclass(frozen=True)
class Setup:
    name: str
    emulator: EmulatorSettings | None
    start: Callable[[EmulatorProcess | None, pathlib.Path], contextlib.AbstractContextManager[Cluster]]


def _on_emulator(
    factory: Callable[[EmulatorProcess, pathlib.Path], contextlib.AbstractContextManager[Cluster]],
) -> Callable[[EmulatorProcess | None, pathlib.Path], contextlib.AbstractContextManager[Cluster]]:
    def start(emulator: EmulatorProcess | None, work_dir: pathlib.Path) -> contextlib.AbstractContextManager[Cluster]:
        assert emulator is not None
        return factory(emulator, work_dir)

    return start


SETUPS: dict[str, Setup] = {
    "ours": Setup("ours", EmulatorSettings(execution="thread"), _on_emulator(ours.cluster)),
    "stock": Setup("stock", EmulatorSettings(execution="process"), _on_emulator(stock.cluster)),
    # The emulator runs in its own process (bench/emulator_process.py): the client and the adapter must not share
    # an interpreter lock with it.
    "native": Setup("native", None, lambda _emulator, work_dir: native.cluster(work_dir)),
    "ceiling": Setup(
        "ceiling",
        EmulatorSettings(0.0, 0.0, 0.0, 0.0, max_running_jobs=64, execution="thread"),
        _on_emulator(functools.partial(ours.cluster, name="ceiling")),
    ),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    small: int  # throughput N for ours and native
    big: int  # the largest N, where the targets are stated: ours and native
    stock: int  # throughput N for stock (each of its jobs is a process)
    stream: int  # latency stream length
    throttled: int
    ceiling: int  # throughput N for the adapter-only ceiling
    payloads: tuple[int, ...] = scenarios.PAYLOAD_SIZES
    #: A throughput step stops waiting after this long and reports how many results arrived: `make bench` must
    #: end within 10 minutes on 2 shared cores.
    max_step_seconds: float = 240.0


FULL = Sizes(small=1_000, big=10_000, stock=50, stream=200, throttled=200, ceiling=1_000)
QUICK = Sizes(small=1_000, big=2_000, stock=50, stream=50, throttled=100, ceiling=1_000, max_step_seconds=60.0)
#: Seconds, not minutes: checks that every setup and scenario runs (tests/test_bench.py).
SMOKE = Sizes(small=20, big=40, stock=5, stream=5, throttled=10, ceiling=20, payloads=(0, 6 * 1024, 1024 * 1024))


def plan(sizes: Sizes) -> list[tuple[str, str, Scenario]]:
    """(label, setup, scenario) in run order."""
    big, stream = sizes.big, sizes.stream
    steps: list[tuple[str, str, Scenario]] = []

    def throughput(tasks: int, setups: Sequence[str], throttle: float = 0.0) -> None:
        kind = "throttled 30%" if throttle else "throughput"
        for setup in setups:
            timeout = min(sizes.max_step_seconds, 30.0 + (0.5 if setup == "stock" else 0.03) * tasks)
            scenario = functools.partial(scenarios.throughput, tasks=tasks, timeout=timeout, throttle_rate=throttle)
            steps.append((f"{kind} N={tasks}", setup, scenario))

    throughput(sizes.small, ("ours", "native"))
    throughput(sizes.stock, ("stock",))
    throughput(big, ("ours", "native"))
    throughput(sizes.ceiling, ("ceiling",))
    for setup, tasks in (("ours", stream), ("native", stream), ("stock", max(1, stream // 4))):
        latency = functools.partial(scenarios.latency_stream, tasks=tasks, interval=0.05, timeout=60.0)
        steps.append((f"latency stream of {tasks}", setup, latency))
    for setup in ("ours", "stock", "native"):
        sweep = functools.partial(scenarios.payloads, timeout=30.0, sizes=sizes.payloads)
        steps.append(("payload sweep", setup, sweep))
    throughput(sizes.throttled, ("ours",), throttle=0.3)
    throughput(sizes.stock, ("stock",), throttle=0.3)
    return steps


@contextlib.contextmanager
def _session(setup: Setup, work_dir: pathlib.Path) -> Iterator[Cluster]:
    if setup.emulator is None:
        with setup.start(None, work_dir) as cluster:
            yield cluster
        return
    with EmulatorProcess(setup.emulator.config()) as emulator, setup.start(emulator, work_dir) as cluster:
        yield cluster


def run_setup(setup: Setup, steps: list[tuple[str, Scenario]], root: pathlib.Path) -> Iterator[dict[str, Any]]:
    """The steps of one setup on one session (one emulator, scheduler and adapter): starting them costs tens of
    seconds on a loaded machine. A timed-out step ends the session (its tasks would still run); a session that fails
    to start is retried once."""
    failures = 0
    session = 0
    while steps:
        session += 1
        try:
            with _session(setup, root / setup.name / f"session-{session}") as cluster:
                while steps:
                    label, scenario = steps[0]
                    print(f"bench: {label} / {setup.name} ...", end=" ", flush=True)
                    started = time.monotonic()
                    record = scenario(cluster)
                    record.update(
                        label=label,
                        emulator=dataclasses.asdict(setup.emulator) if setup.emulator else None,
                        step_seconds=round(time.monotonic() - started, 1),
                    )
                    print(f"{record['outcome']} ({record['step_seconds']} s) {record.get('error', '')}", flush=True)
                    steps = steps[1:]
                    yield record
                    if record["outcome"] == "timeout":
                        break
        except Exception as exc:  # noqa: BLE001 - a setup that fails (a port taken meanwhile) is recorded, and retried
            error = describe_error(exc)
            print(f"(session failed: {error})", flush=True)
            failures += 1
            if failures == SETUP_ATTEMPTS:
                for label, _ in steps:
                    yield {"setup": setup.name, "label": label, "outcome": "setup-error", "error": error}
                return


def _versions() -> dict[str, str]:
    names = ("opengris-scaler", "boto3", "moto", "cloudpickle", "scaler-aws-batch")
    found: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks instead of 10,000, a stream of 50")
    parser.add_argument("--smoke", action="store_true", help="tiny workloads: checks that everything runs")
    parser.add_argument("--big", type=int, default=None, help="the largest N (default 10,000)")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the results here")
    parser.add_argument("--work-dir", type=pathlib.Path, default=None, help="logs of each run (default: a temp dir)")
    args = parser.parse_args(argv)

    root = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="scaler-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "load_average_start": load_average(),
        "work_dir": str(root),
    }
    print(f"bench: logs under {root}; load average {meta['load_average_start']}", flush=True)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.big is not None:
        sizes = dataclasses.replace(sizes, big=args.big)
    by_setup: dict[str, list[tuple[str, Scenario]]] = {}
    for label, setup_name, scenario in plan(sizes):
        if setup_name in args.setups:
            by_setup.setdefault(setup_name, []).append((label, scenario))
    for setup_name, steps in by_setup.items():
        results.extend(run_setup(SETUPS[setup_name], steps, root))
    meta["load_average_end"] = load_average()
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    print(f"bench: total {meta['total_seconds']} s; load average at the end {meta['load_average_end']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"bench: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
