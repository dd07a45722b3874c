"""The measured workloads. Each takes a running :class:`~bench.common.Cluster` and returns one JSON-able record."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from bench.common import (
    Cluster,
    api_snapshot,
    cpu_by_process,
    describe_error,
    failed_jobs,
    load_average,
    process_usage,
    reset_counters,
    set_throttle_rate,
)

T = TypeVar("T")
#: After the last result, wait this long before reading the counters, so trailing clean-up calls are counted.
SETTLE_SECONDS = 2.0
KIB = 1024
#: 5-8 KiB straddle the inline budget of AWS's 8,192-character container overrides; 28 KiB is where a payload that
#: is inlined up to the 30 KiB SubmitJob limit fails; 10 MiB goes through the store.
PAYLOAD_SIZES = (0, 1 * KIB, 4 * KIB, 5 * KIB, 6 * KIB, 7 * KIB, 8 * KIB, 16 * KIB, 28 * KIB, 64 * KIB, 1024 * KIB,
                 10 * 1024 * KIB)  # fmt: skip


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
    return {name: round(count / tasks, 4) for name, count in counts.items()}


class _Usage:
    """The adapter process's CPU seconds and peak RSS over one measurement."""

    def __init__(self, cluster: Cluster) -> None:
        self._pid = cluster.adapter_pid
        self._start = process_usage(self._pid).cpu_seconds if self._pid is not None else 0.0

    def finish(self, tasks: int) -> dict[str, Any]:
        if self._pid is None:
            return {"adapter_cpu_ms_per_task": None, "adapter_peak_rss_mib": None}
        usage = process_usage(self._pid)
        return {
            "adapter_cpu_ms_per_task": round(1000 * (usage.cpu_seconds - self._start) / tasks, 3),
            "adapter_peak_rss_mib": usage.peak_rss_mib,
        }


def _record(cluster: Cluster, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": scenario, "setup": cluster.setup, "params": params, "load_before": load_average()}


def throughput(cluster: Cluster, tasks: int, timeout: float, throttle_rate: float = 0.0) -> dict[str, Any]:
    """``abs(-i)`` for i in 1..tasks, submitted at once: wall time to the last result (or, past ``timeout``, how many
    results arrived), calls and CPU per task. A timed-out step ends its session (its tasks would run on)."""
    record = _record(cluster, "throttled" if throttle_rate else "throughput", {"tasks": tasks})
    if throttle_rate:
        record["params"]["throttle_rate"] = throttle_rate
    reset_counters(cluster)
    failed_before = failed_jobs(cluster)
    usage = _Usage(cluster)
    cpu_before = cpu_by_process(cluster)
    set_throttle_rate(cluster, throttle_rate)
    started = time.monotonic()
    try:
        futures = [cluster.client.submit(abs, -index) for index in range(1, tasks + 1)]
        # One result at a time: concurrent.futures.wait can return before Scaler's futures are all done.
        for future in futures:
            try:
                future.result(timeout=max(0.0, timeout - (time.monotonic() - started)))
            except concurrent.futures.TimeoutError:
                break
            except Exception:  # noqa: BLE001 - a failed task is counted below, from its future
                continue
        done = {future for future in futures if future.done()}
    finally:
        set_throttle_rate(cluster, 0.0)
    seconds = time.monotonic() - started
    wrong = [
        index
        for index, future in enumerate(futures, start=1)
        if future in done and (future.exception() is not None or future.result() != index)
    ]
    outcome = "timeout" if len(done) < tasks else "error" if wrong else "ok"
    error = f"{len(done)} of {tasks} results within {timeout:.0f} s" if outcome == "timeout" else ""
    if wrong:
        error = f"{len(wrong)} failed or wrong results"
    record["load_after"] = load_average()
    cpu_after = cpu_by_process(cluster)
    time.sleep(SETTLE_SECONDS)
    api = api_snapshot(cluster)
    finished = max(1, len(done))
    batch_calls = sum(api["batch"].values())
    record.update(
        outcome=outcome,
        error=error,
        wall_seconds=round(seconds, 2),
        completed=len(done),
        tasks_per_second=round(len(done) / seconds, 2),
        api=api,
        batch_per_task=_per_task(api["batch"], finished),
        batch_calls_per_task=round(batch_calls / finished, 4),
        s3_adapter_per_task=round(sum(api["s3_adapter"].values()) / finished, 4),
        s3_jobs_per_task=round(sum(api["s3_jobs"].values()) / finished, 4),
        failed_jobs=failed_jobs(cluster) - failed_before,
        cpu_ms_per_task_by_process={
            role: round(1000 * (cpu_after[role] - cpu_before[role]) / finished, 2) for role in cpu_after
        },
        cpu_cores_busy=round((sum(cpu_after.values()) - sum(cpu_before.values())) / seconds, 2),
        **usage.finish(finished),
    )
    return record


def _job_end_time() -> Callable[[], float]:
    """A task returning the time it ends (nested, so it travels by value to any job or worker process)."""

    def job_end_time() -> float:
        import time as job_time

        return job_time.time()

    return job_end_time


def latency_stream(cluster: Cluster, tasks: int, interval: float, timeout: float) -> dict[str, Any]:
    """A stream of single tasks, one every ``interval`` s. Each returns ``time.time()`` as its job ends; latency is
    the time from then until the client's future resolved (the result's way back: store, adapter, scheduler)."""
    record = _record(cluster, "latency", {"tasks": tasks, "interval_seconds": interval})
    reset_counters(cluster)
    failed_before = failed_jobs(cluster)
    resolved: dict[int, float] = {}
    lock = threading.Lock()

    def on_done(index: int, future: Future[Any]) -> None:
        with lock:
            resolved[index] = time.time()

    futures: list[Future[Any]] = []
    job_end_time = _job_end_time()
    for index in range(tasks):
        future = cluster.client.submit(job_end_time)
        future.add_done_callback(functools.partial(on_done, index))
        futures.append(future)
        time.sleep(interval)
    deadline = time.monotonic() + timeout
    samples: list[float] = []
    errors: list[str] = []
    for index, future in enumerate(futures):
        try:
            ended = future.result(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - a failed or late task is a result to record
            errors.append(describe_error(exc))
            continue
        while index not in resolved:  # the callback runs right after the result is set
            time.sleep(0.001)
        samples.append(resolved[index] - float(ended))
    record["load_after"] = load_average()
    samples.sort()
    record.update(
        outcome="ok" if not errors else "error",
        error="; ".join(sorted(set(errors)))[:500],
        p50_seconds=round(statistics.median(samples), 3) if samples else None,
        p99_seconds=round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 3) if samples else None,
        max_seconds=round(samples[-1], 3) if samples else None,
        failed_jobs=failed_jobs(cluster) - failed_before,
        api=api_snapshot(cluster),
    )
    return record


def _submit_len(cluster: Cluster, data: bytes, timeout: float) -> int:
    result: int = cluster.client.submit(len, data).result(timeout=timeout)
    return result


def payloads(cluster: Cluster, timeout: float, sizes: tuple[int, ...] = PAYLOAD_SIZES) -> dict[str, Any]:
    """``client.submit(len, os.urandom(size))`` for each size: what the client gets back, and failed jobs."""
    record = _record(cluster, "payload", {"sizes": list(sizes)})
    reset_counters(cluster)
    failed_before = failed_jobs(cluster)
    cases: list[dict[str, Any]] = []
    for size in sizes:
        data = os.urandom(size)
        before = failed_jobs(cluster)
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
                "failed_jobs": failed_jobs(cluster) - before,
            }
        )
    record["load_after"] = load_average()
    record.update(
        outcome="ok" if all(case["outcome"] == "ok" for case in cases) else "error",
        cases=cases,
        failed_jobs=failed_jobs(cluster) - failed_before,
        api=api_snapshot(cluster),
    )
    return record
