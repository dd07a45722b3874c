"""``python -m bench.run [--quick] [--scenarios ...] [--adapters ...] [--json out.json]``.

Every scenario runs once per adapter, each on a fresh Batch emulator (same settings) with a fresh scheduler, the
adapters alternating so that both see similar machine load.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

from batch_emulator import BatchEmulator
from bench import ours, scaler_native, scenarios
from bench.common import Cluster, EmulatorSettings, RequestCounter, describe_error, load_average

ClusterFactory = Callable[[BatchEmulator, RequestCounter, pathlib.Path], contextlib.AbstractContextManager[Cluster]]
ADAPTERS: dict[str, ClusterFactory] = {ours.NAME: ours.cluster, scaler_native.NAME: scaler_native.cluster}
SCENARIOS = ("throughput", "latency", "payload", "throttled")
Step = tuple[str, Callable[[Cluster], dict[str, Any]]]


def _throughput(cluster: Cluster, tasks: int, timeout: float) -> dict[str, Any]:
    return scenarios.throughput(cluster, tasks, timeout)


def plan(selected: Sequence[str], quick: bool) -> list[Step]:
    """(label, scenario) pairs in run order."""
    steps: list[Step] = []
    if "throughput" in selected:
        for tasks in (200,) if quick else (200, 1000):
            timeout = 120.0 + 0.6 * tasks
            steps.append((f"throughput N={tasks}", functools.partial(_throughput, tasks=tasks, timeout=timeout)))
    if "latency" in selected:
        repeats = 5 if quick else 10
        steps.append((f"latency x{repeats}", lambda c: scenarios.latency(c, repeats, timeout=60.0)))
    if "payload" in selected:
        steps.append(("payload", lambda c: scenarios.payloads(c, timeout=120.0)))
    if "throttled" in selected:
        tasks = 50 if quick else 100
        steps.append((f"throttled 30% N={tasks}", lambda c: scenarios.throughput(c, tasks, 240.0, throttle_rate=0.3)))
    return steps


@contextlib.contextmanager
def _session(
    factory: ClusterFactory, settings: EmulatorSettings, work_dir: pathlib.Path
) -> Iterator[tuple[Cluster, BatchEmulator]]:
    with BatchEmulator(settings.config()) as emulator:
        requests = RequestCounter(emulator)
        with factory(emulator, requests, work_dir) as cluster:
            yield cluster, emulator


def run_step(
    label: str, step: Callable[[Cluster], dict[str, Any]], adapter: str, settings: EmulatorSettings, root: pathlib.Path
) -> dict[str, Any]:
    work_dir = root / f"{label.replace(' ', '_').replace('%', 'pct').replace('=', '')}-{adapter}"
    started = time.monotonic()
    try:
        with _session(ADAPTERS[adapter], settings, work_dir) as (cluster, _):
            record = step(cluster)
    except (RuntimeError, OSError, TimeoutError, ValueError) as exc:  # setup failed: record it and go on
        record = {"adapter": adapter, "outcome": "setup-error", "error": describe_error(exc)}
    record.update(label=label, work_dir=str(work_dir), step_seconds=round(time.monotonic() - started, 1))
    return record


def _cell(record: dict[str, Any]) -> str:
    return str(_cell_text(record))


def _cell_text(record: dict[str, Any]) -> Any:
    if record["outcome"] == "setup-error":
        return f"setup failed: {record['error']}"
    scenario = record["scenario"]
    if scenario in ("throughput", "throttled"):
        if record["outcome"] != "ok":
            return record["error"]
        api = record["batch_per_task"]
        calls = ", ".join(f"{name} {value:g}" for name, value in api.items())
        throttled = sum(record["api"]["batch_throttled"].values())
        extra = f", throttled {throttled}" if throttled else ""
        return f"{record['wall_seconds']:.1f} s, {record['tasks_per_second']:.1f} tasks/s ({calls}/task{extra})"
    if scenario == "latency":
        if record["median_seconds"] is None:
            return record["error"]
        low, high = record["min_seconds"], record["max_seconds"]
        return f"median {record['median_seconds']:.2f} s (min {low:.2f}, max {high:.2f})"
    if scenario == "payload":
        return "; ".join(
            f"{case['bytes'] // 1024} KiB {'ok' if case['outcome'] == 'ok' else case['error'][:80]}"
            for case in record["cases"]
        )
    return record["outcome"]


def print_table(results: list[dict[str, Any]], adapters: Sequence[str]) -> None:
    by_label: dict[str, dict[str, dict[str, Any]]] = {}
    for record in results:
        by_label.setdefault(record["label"], {})[record["adapter"]] = record
    width = max((len(label) for label in by_label), default=10)
    print()
    for label, row in by_label.items():
        for adapter in adapters:
            if adapter in row:
                print(f"{label:<{width}}  {adapter:<7} {_cell(row[adapter])}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N=200 only, 5 latency samples, 50 throttled tasks")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--adapters", nargs="+", choices=list(ADAPTERS), default=list(ADAPTERS))
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the results here")
    parser.add_argument("--work-dir", type=pathlib.Path, default=None, help="logs of each run (default: a temp dir)")
    args = parser.parse_args(argv)

    settings = EmulatorSettings()
    root = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="scaler-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "command": shlex.join([pathlib.Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
        "emulator": settings.__dict__,
        "work_dir": str(root),
    }
    print(f"bench: logs under {root}; load average {meta['load_average_start']}", flush=True)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for label, step in plan(args.scenarios, args.quick):
        for adapter in args.adapters:
            print(f"bench: {label} / {adapter} ...", end=" ", flush=True)
            record = run_step(label, step, adapter, settings, root)
            results.append(record)
            print(f"{record['outcome']} ({record['step_seconds']} s) {_cell(record)}", flush=True)
    meta["load_average_end"] = load_average()
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    print_table(results, args.adapters)
    print(f"bench: total {meta['total_seconds']} s; load average at the end {meta['load_average_end']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"bench: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
