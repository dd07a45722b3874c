"""``python -m bench.report RESULTS.json``: docs/benchmarks.md and its chart, generated from one run's JSON.

Targets (issue 8), checked against the run: at the largest N, Batch calls per task <= 0.01 and <= 1/5 of stock's;
adapter CPU per task <= 1/3 of stock's; throughput >= 0.8x the native ceiling; latency p50 <= 1 s and p99 <= 3 s;
no failed job at any payload size. A missed target is explained by ``bench.notes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from bench.notes import MISSED, SCOPE, SETUP_NOTES

DOC = pathlib.Path("docs/benchmarks.md")
CHART = pathlib.Path("docs/benchmarks.png")


@dataclasses.dataclass(frozen=True)
class Target:
    key: str
    text: str
    value: str
    met: bool | None  # None: not measured in this run


def _index(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(record["label"], record["setup"]): record for record in results}


def _ok(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("outcome") == "ok"


def _throughputs(results: list[dict[str, Any]], setup: str) -> list[dict[str, Any]]:
    found = [r for r in results if r.get("scenario") == "throughput" and r["setup"] == setup]
    return sorted(found, key=lambda r: r["params"]["tasks"])


def _measured(record: dict[str, Any]) -> bool:
    """Finished, or timed out with some results (its figures are per completed task)."""
    return record.get("outcome") in ("ok", "timeout") and record.get("completed", 1) > 0


def _largest(results: list[dict[str, Any]], setup: str) -> dict[str, Any] | None:
    found = [r for r in _throughputs(results, setup) if _measured(r)]
    return found[-1] if found else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def targets(results: list[dict[str, Any]]) -> tuple[list[Target], dict[str, float | None]]:
    ours, stock = _largest(results, "ours"), _largest(results, "stock")
    native_runs = {r["params"]["tasks"]: r for r in _throughputs(results, "native") if _measured(r)}
    ours_calls = ours["batch_calls_per_task"] if ours else None
    stock_calls = stock["batch_calls_per_task"] if stock else None
    ours_cpu = ours["adapter_cpu_ms_per_task"] if ours else None
    stock_cpu = stock["adapter_cpu_ms_per_task"] if stock else None
    native = native_runs.get(ours["params"]["tasks"]) if ours else None
    ratios = {
        "batch_calls_ours_over_stock": _ratio(ours_calls, stock_calls),
        "adapter_cpu_ours_over_stock": _ratio(ours_cpu, stock_cpu),
        "throughput_ours_over_native": _ratio(
            ours["tasks_per_second"] if ours else None, native["tasks_per_second"] if native else None
        ),
        "throughput_ours_over_stock": _ratio(
            ours["tasks_per_second"] if ours else None, stock["tasks_per_second"] if stock else None
        ),
    }
    latency = next((r for r in results if r.get("scenario") == "latency" and r["setup"] == "ours"), None)
    payload = next((r for r in results if r.get("scenario") == "payload" and r["setup"] == "ours"), None)
    n = ours["params"]["tasks"] if ours else None
    found: list[Target] = [
        Target("calls", f"Batch calls per task <= 0.01 (N={n})", _fmt(ours_calls),
               None if ours_calls is None else ours_calls <= 0.01),
        Target("calls_vs_stock", "Batch calls per task <= 1/5 of stock's", _fmt(ratios["batch_calls_ours_over_stock"]),
               None if ratios["batch_calls_ours_over_stock"] is None else ratios["batch_calls_ours_over_stock"] <= 0.2),
        Target("cpu_vs_stock", "adapter CPU per task <= 1/3 of stock's", _fmt(ratios["adapter_cpu_ours_over_stock"]),
               None if ratios["adapter_cpu_ours_over_stock"] is None
               else ratios["adapter_cpu_ours_over_stock"] <= 1 / 3),
        Target("throughput", f"throughput >= 0.8x native (N={n})", _fmt(ratios["throughput_ours_over_native"]),
               None if ratios["throughput_ours_over_native"] is None
               else ratios["throughput_ours_over_native"] >= 0.8),
        Target("latency_p50", "job end -> future resolved, p50 <= 1 s",
               _fmt(latency.get("p50_seconds") if latency else None),
               None if not latency or latency.get("p50_seconds") is None else latency["p50_seconds"] <= 1.0),
        Target("latency_p99", "job end -> future resolved, p99 <= 3 s",
               _fmt(latency.get("p99_seconds") if latency else None),
               None if not latency or latency.get("p99_seconds") is None else latency["p99_seconds"] <= 3.0),
        Target("payload", "0 failed jobs at every payload size",
               "n/a" if payload is None else str(payload.get("failed_jobs")),
               None if payload is None else payload.get("failed_jobs") == 0 and _ok(payload)),
    ]  # fmt: skip
    return found, ratios


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _throughput_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| setup | workload | outcome | tasks/s | Batch calls/task (by operation) | S3 req/task adapter | "
        "S3 req/task jobs | adapter CPU ms/task | adapter peak RSS MiB | failed jobs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in results:
        if record.get("scenario") not in ("throughput", "throttled"):
            continue
        by_op = ", ".join(f"{op} {value:g}" for op, value in record.get("batch_per_task", {}).items()) or "-"
        total = record.get("batch_calls_per_task")
        rows.append(
            f"| {record['setup']} | {record['label']} | {record['outcome']} {record.get('error', '')} | "
            f"{_fmt(record.get('tasks_per_second'))} | {_fmt(total)} ({by_op}) | "
            f"{_fmt(record.get('s3_adapter_per_task'))} | {_fmt(record.get('s3_jobs_per_task'))} | "
            f"{_fmt(record.get('adapter_cpu_ms_per_task'))} | {_fmt(record.get('adapter_peak_rss_mib'))} | "
            f"{record.get('failed_jobs', 'n/a')} |"
        )
    return rows


#: The roles of bench.common.cpu_by_process, in the order of a task's way.
CPU_ROLES = (
    ("client", "client"),
    ("scaler", "Scaler (scheduler, object storage, native workers)"),
    ("adapter", "adapter"),
    ("emulator", "emulator (Batch, S3, the jobs)"),
)


def _cpu_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| setup | workload | " + " | ".join(title for _, title in CPU_ROLES) + " | total | cores busy |",
        "| --- | --- |" + " --- |" * (len(CPU_ROLES) + 2),
    ]
    for record in results:
        by_process = record.get("cpu_ms_per_task_by_process")
        if record.get("scenario") != "throughput" or not by_process:
            continue
        cells = " | ".join(_fmt(by_process.get(role)) for role, _ in CPU_ROLES)
        rows.append(
            f"| {record['setup']} | {record['label']} | {cells} | {_fmt(sum(by_process.values()))} | "
            f"{_fmt(record.get('cpu_cores_busy'))} |"
        )
    return rows


def _latency_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| setup | workload | outcome | p50 s | p99 s | max s | failed jobs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in results:
        if record.get("scenario") == "latency":
            rows.append(
                f"| {record['setup']} | {record['label']} | {record['outcome']} {record.get('error', '')[:120]} | "
                f"{_fmt(record.get('p50_seconds'))} | {_fmt(record.get('p99_seconds'))} | "
                f"{_fmt(record.get('max_seconds'))} | {record.get('failed_jobs', 'n/a')} |"
            )
    return rows


def _size(value: int) -> str:
    if value >= 1024 * 1024:
        return f"{value // (1024 * 1024)} MiB"
    return f"{value // 1024} KiB" if value else "0 B"


def _payload_rows(results: list[dict[str, Any]]) -> list[str]:
    sweeps = {r["setup"]: r for r in results if r.get("scenario") == "payload" and "cases" in r}
    if not sweeps:
        return ["(no payload sweep in this run)"]
    setups = list(sweeps)
    sizes = [case["bytes"] for case in next(iter(sweeps.values()))["cases"]]
    rows = ["| size | " + " | ".join(setups) + " |", "| --- |" + " --- |" * len(setups)]
    for index, size in enumerate(sizes):
        cells = []
        for setup in setups:
            case = sweeps[setup]["cases"][index]
            text = "ok" if case["outcome"] == "ok" else f"{case['outcome']}: {case['error'][:80]}"
            cells.append(f"{text} ({case['failed_jobs']} failed jobs)")
        rows.append(f"| {_size(size)} | " + " | ".join(cells) + " |")
    return rows


def _emulator_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = ["| setup | emulator |", "| --- | --- |"]
    seen: set[str] = set()
    for record in results:
        if record["setup"] in seen:
            continue
        seen.add(record["setup"])
        settings = record.get("emulator")
        text = ", ".join(f"{key} {value}" for key, value in settings.items()) if settings else "none (no Batch)"
        rows.append(f"| {record['setup']} | {text} |")
    return rows


def chart(results: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    runs = [r for r in results if r.get("scenario") == "throughput" and _measured(r)]
    labels = [f"{r['setup']}\nN={r['params']['tasks']}" for r in runs]
    axes[0][0].bar(labels, [r["tasks_per_second"] for r in runs], color="tab:blue")
    axes[0][0].set_title("throughput (tasks/s, higher is better)")
    adapters = [r for r in runs if r["setup"] != "native"]
    adapter_labels = [f"{r['setup']}\nN={r['params']['tasks']}" for r in adapters]
    axes[0][1].bar(adapter_labels, [r["batch_calls_per_task"] for r in adapters], color="tab:orange")
    axes[0][1].set_yscale("log")
    axes[0][1].set_title("Batch API calls per task (log, lower is better)")
    axes[1][0].bar(adapter_labels, [r["adapter_cpu_ms_per_task"] or 0 for r in adapters], color="tab:green")
    axes[1][0].set_title("adapter CPU ms per task (lower is better)")
    streams = [r for r in results if r.get("scenario") == "latency" and r.get("p50_seconds") is not None]
    names = [r["setup"] for r in streams]
    positions = range(len(streams))
    axes[1][1].bar([p - 0.2 for p in positions], [r["p50_seconds"] for r in streams], width=0.4, label="p50")
    axes[1][1].bar([p + 0.2 for p in positions], [r["p99_seconds"] for r in streams], width=0.4, label="p99")
    axes[1][1].set_xticks(list(positions), names)
    axes[1][1].axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes[1][1].axhline(3.0, color="grey", linewidth=0.8, linestyle=":")
    axes[1][1].set_title("job end -> future resolved (s)")
    axes[1][1].legend()
    for axis in axes.flat:
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def render(data: dict[str, Any], chart_path: pathlib.Path, results_path: pathlib.Path) -> str:
    meta, results = data["meta"], data["results"]
    found, ratios = targets(results)
    versions = ", ".join(f"{name} {version}" for name, version in sorted(meta.get("versions", {}).items()))
    lines = [
        "# Benchmarks: ours, Scaler 2.9's stock `aws_batch` backend, and Scaler's native workers",
        "",
        f"<!-- generated by `python -m bench.report {results_path}` from one `make bench` run; do not edit -->",
        "",
        f"Generated from `{results_path}`: `{meta['command']}`, started {meta['started']}, "
        f"{meta['total_seconds']} s in total.",
        "",
        f"- Machine: {meta['cpus']} CPUs, {meta.get('memory_gib')} GiB RAM, {meta['platform']}, "
        f"Python {meta['python']}; {versions}.",
        f"- Load average (1, 5, 15 min) at the start {meta['load_average_start']}, at the end "
        f"{meta['load_average_end']}; every step's own is in the JSON. The machine was shared with other work.",
        "",
        "## Setups",
        "",
        *(f"- **{name}**: {text}" for name, text in SETUP_NOTES.items()),
        "",
        "## Targets",
        "",
        SCOPE,
        "",
        "| target | value | status |",
        "| --- | --- | --- |",
        *(f"| {t.text} | {t.value} | {_mark(t.met)} |" for t in found),
        "",
        "Ratios from this run: "
        + "; ".join(f"{name.replace('_', ' ')} {_fmt(value)}" for name, value in ratios.items())
        + ".",
        "",
    ]
    missed = [t for t in found if t.met is not True]
    if missed:
        lines += ["### Why a target is missed, and what would close it", ""]
        for target in missed:
            lines += [f"- **{target.text}** ({target.value}): {MISSED.get(target.key, 'not measured in this run.')}"]
        lines += [""]
    lines += [
        f"![throughput, Batch calls, adapter CPU and latency]({chart_path.name})",
        "",
        "## Throughput and cost per task",
        "",
        "`abs(-i)` for i in 1..N, submitted at once; Batch calls from the emulator, S3 requests split by who made",
        "them (the adapter, or the jobs, told apart by the SDK app id the emulator gives jobs), adapter CPU and peak",
        "RSS from /proc of the adapter process (stock: its worker process). Native workers have no adapter.",
        "",
        *_throughput_rows(results),
        "",
        "### Where the CPU goes",
        "",
        "CPU milliseconds per task of every process of the setup, from /proc over the throughput step, and the",
        "average number of cores they kept busy (the machine has 2). On AWS the emulator's share runs on AWS's side.",
        "",
        *_cpu_rows(results),
        "",
        "## Latency",
        "",
        "A stream of single tasks, one every 0.05 s, each returning `time.time()` when its job ends; the latency is",
        "from then to the client's future resolving. Emulator state delays are the defaults (0.05 s per state).",
        "",
        *_latency_rows(results),
        "",
        "## Payload sizes",
        "",
        "`client.submit(len, os.urandom(size))` for each size: what the client got back and how many jobs FAILED.",
        "",
        *_payload_rows(results),
        "",
        "## Emulator settings per setup",
        "",
        *_emulator_rows(results),
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench         # python -m bench.run --json bench/results/full.json, then python -m bench.report",
        "make bench-quick   # 2,000 instead of 10,000 tasks, a stream of 50: bench/results/quick.json",
        ".venv/bin/python -m bench.run --smoke --setups ours native   # tiny workloads: does everything run?",
        "```",
        "",
        "Code: `bench/run.py` (setups and plan), `bench/scenarios.py` (workloads and figures), `bench/ours.py`,",
        "`bench/stock.py`, `bench/native.py`, `bench/report.py` (this page, the chart), `bench/notes.py` (prose).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("--doc", type=pathlib.Path, default=DOC)
    parser.add_argument("--chart", type=pathlib.Path, default=CHART)
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    chart(data["results"], args.chart)
    args.doc.write_text(render(data, args.chart, args.results))
    print(f"bench.report: wrote {args.doc} and {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
