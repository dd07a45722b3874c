"""docs/benchmarks.md is generated from a run's JSON: targets are marked met or missed from the figures, and a
missed one carries its explanation."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from bench import report
from bench.notes import MISSED


def _throughput(setup: str, tasks: int, per_second: float, calls: float, cpu_ms: float | None) -> dict[str, Any]:
    return {
        "scenario": "throughput", "setup": setup, "label": f"throughput N={tasks}", "params": {"tasks": tasks},
        "outcome": "ok", "error": "", "tasks_per_second": per_second, "batch_calls_per_task": calls,
        "batch_per_task": {"SubmitJob": calls / 2, "DescribeJobs": calls / 2}, "s3_adapter_per_task": 1.0,
        "s3_jobs_per_task": 3.0, "adapter_cpu_ms_per_task": cpu_ms, "adapter_peak_rss_mib": 80.0, "failed_jobs": 0,
        "emulator": None,
    }  # fmt: skip


def _run(ours_calls: float, ours_rate: float, p50: float) -> dict[str, Any]:
    results = [
        _throughput("ours", 10_000, ours_rate, ours_calls, 1.0),
        _throughput("native", 10_000, 100.0, 0.0, None),
        _throughput("stock", 200, 1.0, 1.1, 20.0),
        {"scenario": "latency", "setup": "ours", "label": "latency stream of 200", "outcome": "ok", "error": "",
         "p50_seconds": p50, "p99_seconds": 2.0, "max_seconds": 2.5, "failed_jobs": 0, "emulator": None},
        {"scenario": "payload", "setup": "ours", "label": "payload sweep", "outcome": "ok", "failed_jobs": 0,
         "cases": [{"bytes": 0, "outcome": "ok", "error": "", "seconds": 1.0, "failed_jobs": 0}], "emulator": None},
    ]  # fmt: skip
    meta = {
        "command": "python -m bench.run", "started": "now", "total_seconds": 1.0, "cpus": 2, "memory_gib": 1.0,
        "platform": "linux", "python": "3.11", "versions": {}, "load_average_start": [1, 1, 1],
        "load_average_end": [1, 1, 1],
    }  # fmt: skip
    return {"meta": meta, "results": results}


def test_targets_met_are_marked_met_and_ratios_come_from_the_same_run() -> None:
    found, ratios = report.targets(_run(ours_calls=0.005, ours_rate=90.0, p50=0.5)["results"])
    assert {target.key: target.met for target in found} == {
        "calls": True, "calls_vs_stock": True, "cpu_vs_stock": True, "throughput": True,
        "latency_p50": True, "latency_p99": True, "payload": True,
    }  # fmt: skip
    assert ratios["throughput_ours_over_native"] == 0.9 and ratios["adapter_cpu_ours_over_stock"] == 0.05


def test_a_missed_target_is_marked_and_explained(tmp_path: pathlib.Path) -> None:
    data = _run(ours_calls=0.05, ours_rate=40.0, p50=1.5)
    results_path = tmp_path / "full.json"
    results_path.write_text(json.dumps(data))
    doc = tmp_path / "benchmarks.md"
    chart = tmp_path / "benchmarks.png"
    assert report.main([str(results_path), "--doc", str(doc), "--chart", str(chart)]) == 0
    text = doc.read_text()
    assert "| Batch calls per task <= 0.01 (N=10000) | 0.05 | **missed** |" in text
    assert "| throughput >= 0.8x native (N=10000) | 0.4 | **missed** |" in text
    assert "| job end -> future resolved, p50 <= 1 s | 1.5 | **missed** |" in text
    assert MISSED["throughput"] in text and MISSED["latency_p50"] in text
    assert chart.read_bytes().startswith(b"\x89PNG")
