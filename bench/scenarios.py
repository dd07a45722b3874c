"""The measured scenarios. Each takes a running :class:`~bench.common.Cluster` and returns one JSON-able record."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from bench.common import Cluster, api_snapshot, describe_error, load_average, reset_counters

T = TypeVar("T")
#: After the last result, wait this long before reading the call counters, so trailing clean-up calls are counted.
SETTLE_SECONDS = 2.0
KIB = 1024
PAYLOAD_SIZES = (1 * KIB, 8 * KIB, 20 * KIB, 1024 * KIB)


@dataclasses.dataclass
class Bounded(Generic[T]):
    value: T | None
    error: BaseException | None
    seconds: float
    timed_out: bool

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return "timeout"
        return "error" if self.error is not None else "ok"

    def error_text(self, timeout: float) -> str:
        if self.timed_out:
            return f"timed out after {timeout:.0f} s"
        return describe_error(self.error) if self.error is not None else ""


def bounded(call: Callable[[], T], timeout: float) -> Bounded[T]:
    """Run ``call`` in a daemon thread and wait at most ``timeout`` seconds (``client.map`` has no timeout)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except Exception as exc:  # noqa: BLE001 - any failure the client reports is a result to record
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=target, name="bench-call", daemon=True)
    thread.start()
    thread.join(timeout)
    seconds = time.monotonic() - start
    if thread.is_alive():
        return Bounded(None, None, seconds, True)
    return Bounded(box.get("value"), box.get("error"), seconds, False)


def _per_task(counts: dict[str, int], tasks: int) -> dict[str, float]:
    return {name: round(count / tasks, 3) for name, count in counts.items()}


def _record(cluster: Cluster, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": scenario, "adapter": cluster.adapter, "params": params, "load_before": load_average()}


def throughput(cluster: Cluster, tasks: int, timeout: float, throttle_rate: float = 0.0) -> dict[str, Any]:
    """``client.map(abs, range(-tasks, 0))``: wall time from first submit to last result, and API calls per task."""
    record = _record(cluster, "throttled" if throttle_rate else "throughput", {"tasks": tasks})
    if throttle_rate:
        record["params"]["throttle_rate"] = throttle_rate
    reset_counters(cluster)
    cluster.emulator.faults.throttle_rate = throttle_rate
    try:
        run = bounded(lambda: cluster.client.map(abs, range(-tasks, 0)), timeout)
    finally:
        cluster.emulator.faults.throttle_rate = 0.0
    if run.outcome == "ok" and run.value != list(range(tasks, 0, -1)):
        run = Bounded(run.value, ValueError("wrong results"), run.seconds, False)
    record["load_after"] = load_average()
    time.sleep(SETTLE_SECONDS)
    api = api_snapshot(cluster)
    record.update(
        outcome=run.outcome,
        error=run.error_text(timeout),
        wall_seconds=round(run.seconds, 2),
        tasks_per_second=round(tasks / run.seconds, 2) if run.outcome == "ok" else None,
        api=api,
        batch_per_task=_per_task(api["batch"], tasks),
        other_per_task=_per_task(api["other"], tasks),
    )
    return record


def latency(cluster: Cluster, repeats: int, timeout: float) -> dict[str, Any]:
    """``client.submit(math.sqrt, 16).result()`` round trips, one at a time."""
    record = _record(cluster, "latency", {"repeats": repeats})
    reset_counters(cluster)
    samples: list[float] = []
    errors: list[str] = []
    for _ in range(repeats):
        run = bounded(lambda: cluster.client.submit(math.sqrt, 16).result(timeout=timeout), timeout + 5)
        if run.outcome == "ok" and run.value == 4.0:
            samples.append(run.seconds)
        else:
            errors.append(run.error_text(timeout) or f"wrong result {run.value!r}")
            if run.timed_out:
                break
        time.sleep(0.5)  # so one round trip never shares an array window with the next
    record["load_after"] = load_average()
    record.update(
        outcome="ok" if not errors else "error",
        error="; ".join(sorted(set(errors))),
        samples=[round(sample, 3) for sample in samples],
        median_seconds=round(statistics.median(samples), 3) if samples else None,
        min_seconds=round(min(samples), 3) if samples else None,
        max_seconds=round(max(samples), 3) if samples else None,
        api=api_snapshot(cluster),
    )
    return record


def _submit_len(cluster: Cluster, data: bytes, timeout: float) -> int:
    result: int = cluster.client.submit(len, data).result(timeout=timeout)
    return result


def payloads(cluster: Cluster, timeout: float, sizes: tuple[int, ...] = PAYLOAD_SIZES) -> dict[str, Any]:
    """``client.submit(len, os.urandom(size))`` for each size; what the client sees."""
    record = _record(cluster, "payload", {"sizes": list(sizes)})
    reset_counters(cluster)
    cases: list[dict[str, Any]] = []
    for size in sizes:
        data = os.urandom(size)
        run = bounded(functools.partial(_submit_len, cluster, data, timeout), timeout + 5)
        outcome = run.outcome
        if outcome == "ok" and run.value != size:
            outcome = "wrong"
        cases.append(
            {
                "bytes": size,
                "outcome": outcome,
                "error": run.error_text(timeout) or ("" if outcome == "ok" else f"returned {run.value!r}"),
                "seconds": round(run.seconds, 2),
            }
        )
    record["load_after"] = load_average()
    record.update(
        outcome="ok" if all(case["outcome"] == "ok" for case in cases) else "error",
        cases=cases,
        job_status=cluster.emulator.job_status_counts(),
        api=api_snapshot(cluster),
    )
    return record
