"""Usage and cost per task: one record per finished job, a JSON-lines log, totals and an estimated cost.

The backend reports what a job used (:class:`JobUsage`, from DescribeJobs on AWS: queue, resources, attempts, times
and the compute environment the last attempt ran in); the engine hands each finished task to :class:`UsageRecorder`,
which appends a :class:`UsageRecord` to ``--usage-log`` and keeps totals for the one-line summary at exit.
``scaler-batch usage FILE`` reads the log back (:mod:`scaler_aws_batch.usage_report`).

Costs are **estimates**: resources requested x run time x a per-unit price table (:data:`DEFAULT_PRICES`, dated and
sourced in docs/usage-and-cost.md). Instance-level waste (an instance bigger than its jobs, idle minutes before
scale-down) is not attributed to tasks.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Final

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR: Final = 3600.0
MIB_PER_GIB: Final = 1024.0


class ComputeKind(enum.Enum):
    """Where a job ran, as far as billing is concerned."""

    EC2_SPOT = "ec2-spot"
    EC2_ON_DEMAND = "ec2-on-demand"
    FARGATE = "fargate"
    FARGATE_SPOT = "fargate-spot"
    LOCAL = "local"
    SLURM = "slurm"  # a cluster's price is the site's: give it with --prices (the default table has none)
    UNKNOWN = "unknown"

    @classmethod
    def from_compute_environment(cls, environment_type: str | None, resource_type: str | None) -> ComputeKind:
        """From DescribeComputeEnvironments' ``computeResources.type`` (EC2, SPOT, FARGATE, FARGATE_SPOT)."""
        kinds = {
            "EC2": cls.EC2_ON_DEMAND,
            "SPOT": cls.EC2_SPOT,
            "FARGATE": cls.FARGATE,
            "FARGATE_SPOT": cls.FARGATE_SPOT,
        }
        if environment_type != "MANAGED" and environment_type is not None:
            return cls.UNKNOWN  # an unmanaged environment: its instances are yours, Batch does not know their price
        return kinds.get(resource_type or "", cls.UNKNOWN)


class Outcome(enum.Enum):
    SUCCESS = "success"  # the task returned a result
    TASK_ERROR = "task-error"  # the task raised; the job itself succeeded
    JOB_FAILED = "job-failed"  # the job failed (timeout, out of memory, Spot retries exhausted, ...)


@dataclasses.dataclass(frozen=True)
class JobUsage:
    """What one finished job (or array child) used, as its backend reports it. Times are epoch seconds."""

    queue: str | None = None
    compute: ComputeKind = ComputeKind.UNKNOWN
    compute_environment: str | None = None
    vcpus: float = 0.0
    memory_mib: int = 0
    gpus: int = 0
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    #: Seconds the job's attempts ran, summed (a Spot-reclaimed attempt used its instance too).
    run_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class UsageRecord:
    """One line of the usage log."""

    job_id: str
    task_ids: tuple[str, ...]
    outcome: Outcome
    usage: JobUsage

    def to_json(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "job_id": self.job_id,
            "task_ids": list(self.task_ids),
            "queue": usage.queue,
            "compute": usage.compute.value,
            "compute_environment": usage.compute_environment,
            "vcpus": usage.vcpus,
            "memory_mib": usage.memory_mib,
            "gpus": usage.gpus,
            "attempts": usage.attempts,
            "created_at": usage.created_at,
            "started_at": usage.started_at,
            "stopped_at": usage.stopped_at,
            "run_seconds": round(usage.run_seconds, 3),
            "outcome": self.outcome.value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageRecord:
        """Raises KeyError / ValueError / TypeError on a line that is not a usage record."""
        usage = JobUsage(
            queue=data["queue"],
            compute=ComputeKind(data["compute"]),
            compute_environment=data.get("compute_environment"),
            vcpus=float(data["vcpus"]),
            memory_mib=int(data["memory_mib"]),
            gpus=int(data["gpus"]),
            attempts=int(data["attempts"]),
            created_at=_optional_float(data.get("created_at")),
            started_at=_optional_float(data.get("started_at")),
            stopped_at=_optional_float(data.get("stopped_at")),
            run_seconds=float(data["run_seconds"]),
        )
        return cls(str(data["job_id"]), tuple(str(t) for t in data["task_ids"]), Outcome(data["outcome"]), usage)

    @property
    def vcpu_hours(self) -> float:
        return self.usage.vcpus * self.usage.run_seconds / SECONDS_PER_HOUR

    @property
    def gib_hours(self) -> float:
        return self.usage.memory_mib / MIB_PER_GIB * self.usage.run_seconds / SECONDS_PER_HOUR

    @property
    def gpu_hours(self) -> float:
        return self.usage.gpus * self.usage.run_seconds / SECONDS_PER_HOUR


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


# --- prices ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitPrices:
    vcpu_hour: float
    gib_hour: float
    gpu_hour: float = 0.0


@dataclasses.dataclass(frozen=True)
class PriceTable:
    """USD per vCPU-hour, GiB-hour and GPU-hour for each compute kind. ``label`` says what the figures are."""

    label: str
    prices: Mapping[ComputeKind, UnitPrices]

    def cost(self, record: UsageRecord) -> float:
        unit = self.prices.get(record.usage.compute)
        if unit is None:
            return 0.0
        return record.vcpu_hours * unit.vcpu_hour + record.gib_hours * unit.gib_hour + record.gpu_hours * unit.gpu_hour

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str) -> PriceTable:
        """``{"label": "...", "prices": {"ec2-spot": {"vcpu_hour": .., "gib_hour": .., "gpu_hour": ..}, ...}}``."""
        try:
            prices = {
                ComputeKind(kind): UnitPrices(
                    vcpu_hour=float(unit["vcpu_hour"]),
                    gib_hour=float(unit["gib_hour"]),
                    gpu_hour=float(unit.get("gpu_hour", 0.0)),
                )
                for kind, unit in dict(data["prices"]).items()
            }
            label = str(data.get("label") or f"prices from {source}")
        except (KeyError, TypeError, ValueError) as exc:
            kinds = ", ".join(kind.value for kind in ComputeKind)
            raise ValueError(
                f"{source}: a price table is {{'label': str, 'prices': {{KIND: {{'vcpu_hour': USD, 'gib_hour': USD,"
                f" 'gpu_hour': USD}}}}}} with KIND one of {kinds} ({exc})"
            ) from exc
        return cls(label, prices)


def _ec2_unit_prices() -> UnitPrices:
    """Per-vCPU and per-GiB On-Demand prices solved from two us-east-1 list prices: c6i.large (2 vCPU, 4 GiB) at
    $0.085/h and m6i.large (2 vCPU, 8 GiB) at $0.096/h; the GPU-hour is g4dn.xlarge (1 GPU, 4 vCPU, 16 GiB, $0.526/h)
    less its vCPUs and memory at those prices."""
    gib_hour = (0.096 - 0.085) / 4
    vcpu_hour = (0.085 - 4 * gib_hour) / 2
    return UnitPrices(vcpu_hour, gib_hour, gpu_hour=0.526 - 4 * vcpu_hour - 16 * gib_hour)


_EC2 = _ec2_unit_prices()
#: Spot and Fargate Spot as a fraction of On-Demand: an assumption (the real discount moves with the hour and AZ).
SPOT_FRACTION: Final = 0.35
FARGATE_SPOT_FRACTION: Final = 0.30
_FARGATE = UnitPrices(vcpu_hour=0.04048, gib_hour=0.004445)
DEFAULT_PRICES: Final = PriceTable(
    label=(
        "ESTIMATE: us-east-1 Linux list prices recorded 2026-11-21 (aws.amazon.com/ec2/pricing/on-demand,"
        " aws.amazon.com/fargate/pricing); Spot assumed 65% and Fargate Spot 70% below On-Demand"
    ),
    prices={
        ComputeKind.EC2_ON_DEMAND: _EC2,
        ComputeKind.EC2_SPOT: UnitPrices(
            _EC2.vcpu_hour * SPOT_FRACTION, _EC2.gib_hour * SPOT_FRACTION, _EC2.gpu_hour * SPOT_FRACTION
        ),
        ComputeKind.FARGATE: _FARGATE,
        ComputeKind.FARGATE_SPOT: UnitPrices(
            _FARGATE.vcpu_hour * FARGATE_SPOT_FRACTION, _FARGATE.gib_hour * FARGATE_SPOT_FRACTION
        ),
        ComputeKind.LOCAL: UnitPrices(0.0, 0.0, 0.0),
    },
)


def load_price_table(path: str | None) -> PriceTable:
    """The default table, or the JSON file at ``path`` (ValueError naming the file when it is not one)."""
    if path is None:
        return DEFAULT_PRICES
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--prices {path}: cannot read a JSON price table ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--prices {path}: expected a JSON object with 'label' and 'prices'")
    return PriceTable.from_json(data, source=path)


# --- totals -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Totals:
    tasks: int = 0
    jobs: int = 0
    vcpu_hours: float = 0.0
    gib_hours: float = 0.0
    gpu_hours: float = 0.0
    cost: float = 0.0

    def add(self, record: UsageRecord, prices: PriceTable) -> None:
        self.tasks += len(record.task_ids)
        self.jobs += 1
        self.vcpu_hours += record.vcpu_hours
        self.gib_hours += record.gib_hours
        self.gpu_hours += record.gpu_hours
        self.cost += prices.cost(record)


@dataclasses.dataclass
class UsageSummary:
    prices: PriceTable
    total: Totals = dataclasses.field(default_factory=Totals)
    by_queue: dict[str, Totals] = dataclasses.field(default_factory=dict)
    by_compute: dict[ComputeKind, Totals] = dataclasses.field(default_factory=dict)
    by_outcome: dict[Outcome, int] = dataclasses.field(default_factory=dict)

    def add(self, record: UsageRecord) -> None:
        self.total.add(record, self.prices)
        self.by_queue.setdefault(queue_name(record.usage.queue), Totals()).add(record, self.prices)
        self.by_compute.setdefault(record.usage.compute, Totals()).add(record, self.prices)
        self.by_outcome[record.outcome] = self.by_outcome.get(record.outcome, 0) + len(record.task_ids)

    def one_line(self) -> str:
        """For the worker's log at exit."""
        total = self.total
        kinds = ", ".join(f"{kind.value} {t.tasks}" for kind, t in sorted(self.by_compute.items(), key=_by_value))
        return (
            f"usage: {total.tasks} task(s) in {total.jobs} job(s) [{kinds or 'none'}]; {total.vcpu_hours:.4f} vCPU-h,"
            f" {total.gib_hours:.4f} GiB-h, {total.gpu_hours:.4f} GPU-h; estimated cost ${total.cost:.6f}"
        )


def _by_value(item: tuple[ComputeKind, Totals]) -> str:
    return item[0].value


def queue_name(queue: str | None) -> str:
    """A queue ARN's name part, for tables."""
    if not queue:
        return "-"
    return queue.rsplit("/", 1)[-1]


def summarize(records: Iterable[UsageRecord], prices: PriceTable = DEFAULT_PRICES) -> UsageSummary:
    summary = UsageSummary(prices)
    for record in records:
        summary.add(record)
    return summary


# --- the recorder the engine calls --------------------------------------------------------------------------------

#: Array children's job ids are ``f"{parent_id}:{index}"`` on every backend.
ARRAY_CHILD_SEPARATOR: Final = ":"
#: Parents whose describe is remembered for children still to come (a result refused and re-read, a late child).
_REMEMBERED_PARENTS: Final = 4096


def child_usage(parent: JobUsage, measured: JobUsage) -> JobUsage:
    """An array child's usage without describing it: queue, resources and creation time from its parent's describe,
    where and how long it ran from its runner (``measured``: the result's times, attempt and compute environment).
    The runner's times lie within the container's, so the run time leaves out the container's own start."""
    return dataclasses.replace(
        measured,
        queue=parent.queue,
        vcpus=parent.vcpus,
        memory_mib=parent.memory_mib,
        gpus=parent.gpus,
        created_at=parent.created_at,
    )


class UsageRecorder:
    """Collects a record per finished job, appends it to the log file (if any) and keeps the totals.

    An array child resolved from its result object is not described (that would be one DescribeJobs call per 100
    children): :meth:`record_child` combines what its runner measured with its parent's describe
    (:meth:`parent_described`), which the engine makes anyway; children wait for that describe, not for their own.
    """

    def __init__(self, log_path: str | None, prices: PriceTable = DEFAULT_PRICES) -> None:
        self.summary = UsageSummary(prices)
        self._parents: dict[str, JobUsage] = {}  # described array parents (insertion order: oldest first)
        self._waiting: dict[str, list[tuple[str, str, Outcome, JobUsage]]] = {}  # parent -> children to record
        self._file: IO[str] | None = None
        if log_path is not None:
            try:
                self._file = open(log_path, "a", encoding="utf-8", buffering=1)  # closed in close()
            except OSError as exc:
                raise ValueError(f"--usage-log {log_path}: cannot open for appending ({exc.strerror})") from exc

    def record(self, job_id: str, task_ids: Sequence[str], outcome: Outcome, usage: JobUsage | None) -> None:
        """A finished job as its backend described it (unknown usage when the backend says nothing)."""
        self._write(UsageRecord(job_id, tuple(task_ids), outcome, usage or JobUsage()))

    def record_child(self, job_id: str, task_id: str, outcome: Outcome, measured: JobUsage) -> None:
        """An array child (``parent:index``) resolved from its result; recorded once its parent is described."""
        parent_id = job_id.split(ARRAY_CHILD_SEPARATOR, 1)[0]
        parent = self._parents.get(parent_id)
        if parent is None:
            self._waiting.setdefault(parent_id, []).append((job_id, task_id, outcome, measured))
            return
        self._write(UsageRecord(job_id, (task_id,), outcome, child_usage(parent, measured)))

    def parent_described(self, parent_id: str, usage: JobUsage) -> None:
        """The array parent's queue, resources and creation time: record its waiting children."""
        self._parents.pop(parent_id, None)
        self._parents[parent_id] = usage
        while len(self._parents) > _REMEMBERED_PARENTS:
            del self._parents[next(iter(self._parents))]
        for job_id, task_id, outcome, measured in self._waiting.pop(parent_id, []):
            self._write(UsageRecord(job_id, (task_id,), outcome, child_usage(usage, measured)))

    def _write(self, record: UsageRecord) -> None:
        self.summary.add(record)
        if self._file is not None:
            self._file.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")

    @property
    def waiting_parents(self) -> list[str]:
        """Array parents whose children wait for the parent's describe."""
        return list(self._waiting)

    @property
    def waiting(self) -> int:
        return sum(len(children) for children in self._waiting.values())

    def flush_unknown(self) -> int:
        """Record the children still waiting with what their runners measured only (at exit, when their parent
        could not be described in time): no queue or resources, rather than no record."""
        left = 0
        for children in self._waiting.values():
            for job_id, task_id, outcome, measured in children:
                self._write(UsageRecord(job_id, (task_id,), outcome, measured))
                left += 1
        self._waiting.clear()
        return left

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
