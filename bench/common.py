"""What every setup shares: emulator settings, the cluster handle, counters and small helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any, Literal

from scaler import Client

from batch_emulator import EmulatorConfig
from bench.emulator_process import EmulatorProcess

BUCKET = "scaler-bench-bucket"
PREFIX = "scaler-tasks"
#: Dummy credentials; the emulator accepts any.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
#: How long an adapter may take to answer its first task (a cold scheduler, worker and job process).
READY_TIMEOUT_SECONDS = 180.0


@dataclasses.dataclass(frozen=True)
class EmulatorSettings:
    """The emulator settings of one setup (recorded in the JSON output)."""

    delay_submitted: float = 0.05
    delay_pending: float = 0.05
    delay_runnable: float = 0.05
    delay_starting: float = 0.05
    #: Jobs running at once: a compute environment of 32 one-vCPU jobs (an array's children run this many at a time).
    max_running_jobs: int = 32
    submit_tps: float = 50.0
    execution: Literal["process", "thread"] = "thread"

    def config(self) -> EmulatorConfig:
        return EmulatorConfig(
            delay_submitted=self.delay_submitted,
            delay_pending=self.delay_pending,
            delay_runnable=self.delay_runnable,
            delay_starting=self.delay_starting,
            max_running_jobs=self.max_running_jobs,
            tps_limits={"SubmitJob": self.submit_tps},
            execution=self.execution,
        )


@dataclasses.dataclass
class Cluster:
    """A running scheduler and workers (an adapter on an emulator, or Scaler's own local workers) with a client."""

    setup: str
    client: Client
    emulator: EmulatorProcess | None
    #: The adapter's process, whose CPU time and peak RSS are measured (None: Scaler's native workers).
    adapter_pid: int | None
    log_paths: list[pathlib.Path]

    @property
    def emulator_pid(self) -> int | None:
        return self.emulator.pid if self.emulator is not None else None


@dataclasses.dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float
    peak_rss_mib: float


def process_usage(pid: int) -> ProcessUsage:
    """CPU seconds (user + system) and peak RSS of a live process, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    peak_kib = 0
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kib = int(line.split()[1])
    return ProcessUsage(cpu_seconds=cpu, peak_rss_mib=round(peak_kib / 1024, 1))


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 first), or None once the process is gone."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _descendants(root: int) -> set[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cpu_seconds(pid: int, *, reaped: bool = True) -> float:
    """User + system CPU of ``pid``, with that of its exited (reaped) children unless ``reaped`` is False."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_by_process(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far of every process of the setup, by role: the bench's client (this process), the emulator
    (with its job processes), the adapter, and Scaler's own processes (scheduler, object storage, native workers)."""
    own = os.getpid()
    every = _descendants(own) - {own}
    emulator = _descendants(cluster.emulator_pid) if cluster.emulator_pid is not None else set()
    adapter = _descendants(cluster.adapter_pid) if cluster.adapter_pid is not None else set()
    return {
        "client": _cpu_seconds(own, reaped=False),
        "emulator": sum(_cpu_seconds(pid) for pid in emulator),
        "adapter": sum(_cpu_seconds(pid) for pid in adapter),
        "scaler": sum(_cpu_seconds(pid) for pid in every - emulator - adapter),
    }


def api_snapshot(cluster: Cluster) -> dict[str, Any]:
    """Batch calls by operation and S3 requests by requester (adapter, jobs) since the last reset."""
    if cluster.emulator is None:
        return {"batch": {}, "batch_throttled": {}, "max_describe_ids": 0, "s3_adapter": {}, "s3_jobs": {}}
    counters = cluster.emulator.control.counters()
    batch, s3 = counters["batch"], counters["s3"]
    return {
        "batch": dict(sorted(batch["calls"].items())),
        "batch_throttled": dict(sorted(batch["throttled"].items())),
        "max_describe_ids": batch["max_describe_ids"],
        "s3_adapter": dict(sorted(s3["clients"].items())),
        "s3_jobs": dict(sorted(s3["jobs"].items())),
    }


def reset_counters(cluster: Cluster) -> None:
    if cluster.emulator is not None:
        cluster.emulator.control.reset_counters()


def failed_jobs(cluster: Cluster) -> int:
    """Jobs (array children counted) that ended FAILED so far."""
    if cluster.emulator is None:
        return 0
    return cluster.emulator.control.job_status_counts().get("FAILED", 0)


def set_throttle_rate(cluster: Cluster, rate: float) -> None:
    if cluster.emulator is not None:
        cluster.emulator.control.set_throttle_rate(rate)


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def describe_error(exc: BaseException) -> str:
    """One line for the report: the exception type and the first line of its message, shortened."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextlib.contextmanager
def stdout_to(path: pathlib.Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``path`` while a child is spawned: the worker logs to /dev/stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
