"""Usage records: from a DescribeJobs entry to a log line, totals, the estimated cost, the chart, and user tags."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from cdk_support import tool
from scaler_aws_batch.backends.aws_batch.usage import ComputePlacements, cluster_name, job_usage
from scaler_aws_batch.contracts import MAX_JOB_TAGS, JobTag
from scaler_aws_batch.tags import MAX_USER_TAGS, check_user_tags, merge_user_tags, parse_tag_pairs
from scaler_aws_batch.usage import (
    DEFAULT_PRICES,
    ComputeKind,
    JobUsage,
    Outcome,
    PriceTable,
    UnitPrices,
    UsageRecord,
    UsageRecorder,
    load_price_table,
    summarize,
)
from scaler_aws_batch.usage_chart import cost_series, write_cost_chart
from scaler_aws_batch.usage_report import format_summary, read_usage_log

SPOT_CLUSTER = "AWSBatch-spot-ce-0d1c"
ON_DEMAND_CLUSTER = "AWSBatch-od-ce-77aa"
ENVIRONMENTS: list[Mapping[str, Any]] = [
    {"computeEnvironmentName": "spot-ce", "type": "MANAGED", "computeResources": {"type": "SPOT"},
     "ecsClusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{SPOT_CLUSTER}"},
    {"computeEnvironmentName": "od-ce", "type": "MANAGED", "computeResources": {"type": "EC2"},
     "ecsClusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{ON_DEMAND_CLUSTER}"},
    {"computeEnvironmentName": "fargate-ce", "type": "MANAGED", "computeResources": {"type": "FARGATE_SPOT"},
     "ecsClusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/AWSBatch-fg"},
]  # fmt: skip


def _attempt(cluster: str, started_ms: int, stopped_ms: int) -> dict[str, Any]:
    task_arn = f"arn:aws:ecs:us-east-1:123456789012:task/{cluster}/0f1e2d3c"
    return {"container": {"taskArn": task_arn}, "startedAt": started_ms, "stoppedAt": stopped_ms}


def _described(attempts: list[dict[str, Any]], **container: Any) -> dict[str, Any]:
    return {
        "jobId": "j-1",
        "jobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/default",
        "createdAt": 1_700_000_000_000,
        "startedAt": attempts[0]["startedAt"] if attempts else None,
        "stoppedAt": attempts[-1]["stoppedAt"] if attempts else None,
        "attempts": attempts,
        "container": {
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "4096"},
                {"type": "GPU", "value": "1"},
            ],
            **container,
        },
    }


def test_describe_jobs_entry_becomes_usage_with_the_last_attempts_compute_kind() -> None:
    calls: list[int] = []

    def describe() -> list[Mapping[str, Any]]:
        calls.append(1)
        return ENVIRONMENTS

    placements = ComputePlacements(describe)
    # A Spot attempt reclaimed after 60 s, then 120 s On-Demand: both attempts count, the last one's kind wins.
    job = _described(
        [
            _attempt(SPOT_CLUSTER, 1_700_000_010_000, 1_700_000_070_000),
            _attempt(ON_DEMAND_CLUSTER, 1_700_000_100_000, 1_700_000_220_000),
        ]
    )
    usage = job_usage(job, placements)
    assert usage.compute is ComputeKind.EC2_ON_DEMAND and usage.compute_environment == "od-ce"
    assert (usage.vcpus, usage.memory_mib, usage.gpus, usage.attempts) == (2.0, 4096, 1, 2)
    assert usage.run_seconds == 180.0
    assert (usage.created_at, usage.started_at, usage.stopped_at) == (1_700_000_000.0, 1_700_000_010.0, 1_700_000_220.0)
    assert usage.queue == job["jobQueue"]
    assert job_usage(_described([_attempt(SPOT_CLUSTER, 0, 1000)]), placements).compute is ComputeKind.EC2_SPOT
    assert calls == [1], "compute environments are described once, then cached"


def test_unknown_cluster_is_looked_up_again_only_after_the_refresh_interval() -> None:
    now = [0.0]
    calls: list[int] = []

    def describe() -> list[Mapping[str, Any]]:
        calls.append(1)
        return ENVIRONMENTS if len(calls) > 1 else ENVIRONMENTS[:2]  # the Fargate environment is created later

    placements = ComputePlacements(describe, clock=lambda: now[0])
    assert placements("AWSBatch-fg") == (ComputeKind.UNKNOWN, None)
    assert placements("AWSBatch-fg") == (ComputeKind.UNKNOWN, None)
    assert len(calls) == 1, "an unknown cluster does not trigger a describe per job"
    now[0] = 61.0
    assert placements("AWSBatch-fg") == (ComputeKind.FARGATE_SPOT, "fargate-ce")
    assert len(calls) == 2


def test_cluster_name_needs_the_long_task_arn_format() -> None:
    assert cluster_name("arn:aws:ecs:us-east-1:123456789012:task/my-cluster/abc") == "my-cluster"
    assert cluster_name("arn:aws:ecs:us-east-1:123456789012:task/abc") is None
    assert cluster_name(None) is None


def _record(job_id: str, compute: ComputeKind, seconds: float, queue: str = "q/default", **kw: Any) -> UsageRecord:
    usage = JobUsage(
        queue=queue,
        compute=compute,
        vcpus=kw.get("vcpus", 1.0),
        memory_mib=kw.get("memory_mib", 2048),
        gpus=kw.get("gpus", 0),
        attempts=1,
        created_at=1000.0,
        started_at=1000.0 + kw.get("offset", 0.0),
        stopped_at=1000.0 + kw.get("offset", 0.0) + seconds,
        run_seconds=seconds,
    )
    return UsageRecord(job_id, (f"task-{job_id}",), kw.get("outcome", Outcome.SUCCESS), usage)


def test_summary_sums_hours_and_cost_by_queue_and_compute_kind() -> None:
    prices = PriceTable(
        "test prices",
        {ComputeKind.EC2_SPOT: UnitPrices(0.01, 0.001), ComputeKind.EC2_ON_DEMAND: UnitPrices(0.04, 0.004, 0.5)},
    )
    records = [
        _record("a", ComputeKind.EC2_SPOT, 3600, vcpus=2, memory_mib=4096),
        _record("b", ComputeKind.EC2_SPOT, 1800, outcome=Outcome.TASK_ERROR),
        _record("c", ComputeKind.EC2_ON_DEMAND, 7200, queue="q/gpu", gpus=1, outcome=Outcome.JOB_FAILED),
    ]
    summary = summarize(records, prices)
    assert summary.total.tasks == 3
    assert summary.total.vcpu_hours == pytest.approx(2 + 0.5 + 2)
    assert summary.total.gib_hours == pytest.approx(4 + 1 + 4)
    assert summary.total.gpu_hours == pytest.approx(2)
    spot_cost = 2 * 0.01 + 4 * 0.001 + 0.5 * 0.01 + 1 * 0.001
    on_demand_cost = 2 * 0.04 + 4 * 0.004 + 2 * 0.5
    assert summary.by_compute[ComputeKind.EC2_SPOT].cost == pytest.approx(spot_cost)
    assert summary.total.cost == pytest.approx(spot_cost + on_demand_cost)
    assert set(summary.by_queue) == {"default", "gpu"} and summary.by_queue["gpu"].tasks == 1
    text = format_summary(summary)
    assert "tasks: 3 in 3 job(s) (job-failed 1, success 1, task-error 1)" in text
    assert "vCPU-hours: 4.5000   GiB-hours: 9.0000   GPU-hours: 2.0000" in text
    assert f"estimated cost: ${spot_cost + on_demand_cost:.6f}" in text
    assert "prices: test prices" in text
    assert "ec2-spot" in text and "ec2-on-demand" in text
    assert summary.one_line().startswith("usage: 3 task(s) in 3 job(s) [ec2-on-demand 1, ec2-spot 2]")


def test_default_prices_are_labelled_estimates_with_date_and_source() -> None:
    assert DEFAULT_PRICES.label.startswith("ESTIMATE")
    assert "2026-11-21" in DEFAULT_PRICES.label and "aws.amazon.com" in DEFAULT_PRICES.label
    on_demand = DEFAULT_PRICES.prices[ComputeKind.EC2_ON_DEMAND]
    # Reproduces the list prices the table is solved from: c6i.large and m6i.large.
    assert 2 * on_demand.vcpu_hour + 4 * on_demand.gib_hour == pytest.approx(0.085)
    assert 2 * on_demand.vcpu_hour + 8 * on_demand.gib_hour == pytest.approx(0.096)
    assert DEFAULT_PRICES.prices[ComputeKind.EC2_SPOT].vcpu_hour < on_demand.vcpu_hour


def test_price_table_file_replaces_the_defaults_and_bad_files_say_what_to_write(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"label": "our EDP rates", "prices": {"ec2-spot": {"vcpu_hour": 1, "gib_hour": 0}}}))
    table = load_price_table(str(good))
    assert table.label == "our EDP rates"
    assert table.cost(_record("a", ComputeKind.EC2_SPOT, 3600)) == 1.0
    assert table.cost(_record("b", ComputeKind.FARGATE, 3600)) == 0.0  # kinds not in the table cost nothing
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prices": {"ec2-cheap": {"vcpu_hour": 1, "gib_hour": 0}}}))
    with pytest.raises(ValueError, match=r"bad.json.*KIND one of ec2-spot"):
        load_price_table(str(bad))


def test_recorder_appends_json_lines_and_records_children_from_their_parents_describe(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "usage.jsonl"
    recorder = UsageRecorder(str(log))
    single = _record("single", ComputeKind.EC2_SPOT, 10)
    recorder.record("single", ["t-single"], Outcome.SUCCESS, single.usage)
    for index in range(3):  # what each child's runner measured: where and how long it ran
        measured = JobUsage(compute=ComputeKind.EC2_ON_DEMAND, compute_environment="od-ce", attempts=1,
                            started_at=100.0 + index, stopped_at=104.0 + index, run_seconds=4.0)  # fmt: skip
        recorder.record_child(f"parent:{index}", f"t{index}", Outcome.SUCCESS, measured)
    assert recorder.waiting == 3 and recorder.waiting_parents == ["parent"]
    parent = JobUsage(queue="q-od", vcpus=2.0, memory_mib=4096, created_at=90.0)
    recorder.parent_described("parent", parent)
    assert recorder.waiting == 0
    late = JobUsage(compute=ComputeKind.EC2_SPOT, attempts=2, started_at=200.0, stopped_at=201.0, run_seconds=1.0)
    recorder.record_child("parent:3", "t3", Outcome.TASK_ERROR, late)  # its parent is known: recorded at once
    recorder.close()
    records = read_usage_log(str(log))
    assert [r.job_id for r in records] == ["single", "parent:0", "parent:1", "parent:2", "parent:3"]
    assert [r.task_ids for r in records][1:] == [("t0",), ("t1",), ("t2",), ("t3",)]
    child = records[1].usage
    assert (child.queue, child.vcpus, child.memory_mib, child.created_at) == ("q-od", 2.0, 4096, 90.0)
    assert (child.compute, child.compute_environment, child.started_at, child.run_seconds) == (
        ComputeKind.EC2_ON_DEMAND, "od-ce", 100.0, 4.0)  # fmt: skip
    assert (records[4].usage.attempts, records[4].outcome) == (2, Outcome.TASK_ERROR)
    assert recorder.summary.total.tasks == 5
    # 2 vCPU x 4 s x 3 children + 2 vCPU x 1 s, plus the single job's own
    assert recorder.summary.total.vcpu_hours == pytest.approx(single.usage.vcpus * 10 / 3600 + 2 * 13 / 3600)
    line = json.loads(log.read_text().splitlines()[0])
    assert set(line) == {
        "job_id", "task_ids", "queue", "compute", "compute_environment", "vcpus", "memory_mib", "gpus", "attempts",
        "created_at", "started_at", "stopped_at", "run_seconds", "outcome",
    }  # fmt: skip


def test_children_whose_parent_was_never_described_are_recorded_with_what_their_runner_measured() -> None:
    recorder = UsageRecorder(None)
    measured = JobUsage(compute=ComputeKind.FARGATE, attempts=1, started_at=1.0, stopped_at=3.0, run_seconds=2.0)
    recorder.record_child("p:0", "t0", Outcome.SUCCESS, measured)
    assert recorder.summary.total.tasks == 0, "nothing is recorded from a guess while the parent may be described"
    assert recorder.flush_unknown() == 1  # at exit, after the engine's bounded wait: partial rather than lost
    assert recorder.waiting == 0 and recorder.summary.total.tasks == 1
    assert recorder.summary.by_compute == {ComputeKind.FARGATE: recorder.summary.total}


def test_read_usage_log_names_the_bad_line(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "usage.jsonl"
    log.write_text(json.dumps(_record("a", ComputeKind.EC2_SPOT, 1).to_json()) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"usage.jsonl:2: not a usage record"):
        read_usage_log(str(log))
    with pytest.raises(ValueError, match=r"cannot read usage log"):
        read_usage_log(str(tmp_path / "missing.jsonl"))


def test_cost_chart_is_a_png_of_the_cumulative_cost(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    records = [
        _record("a", ComputeKind.EC2_SPOT, 600, offset=0),
        _record("b", ComputeKind.EC2_ON_DEMAND, 600, offset=300),
    ]
    series = cost_series(records, DEFAULT_PRICES)
    assert set(series) == {"total", "ec2-spot", "ec2-on-demand"}
    assert series["total"][-1][1] == pytest.approx(sum(DEFAULT_PRICES.cost(r) for r in records))
    assert [minute for minute, _ in series["total"]] == [0.0, 10.0, 15.0]
    path = tmp_path / "cost.png"
    write_cost_chart(records, DEFAULT_PRICES, str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# --- user tags ----------------------------------------------------------------------------------------------------


def test_tag_pairs_parse_and_reserved_or_bad_tags_are_refused() -> None:
    assert parse_tag_pairs(["team=ml", "project = x "]) == {"team": "ml", "project": "x"}
    with pytest.raises(ValueError, match=r"--tag takes KEY=VALUE, got 'novalue'"):
        parse_tag_pairs(["novalue"])
    with pytest.raises(ValueError, match=r"'aws:x' starts with 'aws:'"):
        check_user_tags({"aws:x": "1"}, source="--tag")
    with pytest.raises(ValueError, match=r"starts with 'scaler-batch:', which the adapter reserves"):
        check_user_tags({JobTag.ADAPTER_ID: "1"}, source="--tag")
    with pytest.raises(ValueError, match=r"value of tag 'k'"):
        check_user_tags({"k": "x" * 257}, source="--tag")


def test_stack_and_worker_tags_together_stay_within_batchs_50_tag_limit() -> None:
    stack = {f"stack-{i}": "v" for i in range(30)}
    worker = {f"worker-{i}": "v" for i in range(MAX_USER_TAGS - 30)}
    merged = merge_user_tags(stack, worker)
    assert len(merged) == MAX_USER_TAGS < MAX_JOB_TAGS
    with pytest.raises(ValueError, match=r"together: 47 user tags.*at most 50 tags.*drop 1 of them"):
        merge_user_tags(stack, {**worker, "one-more": "v"})
    assert merge_user_tags({"team": "a"}, {"team": "b"}) == {"team": "b"}, "the worker's --tag wins"


def test_engine_refuses_too_many_tags_at_start() -> None:
    from scaler_aws_batch.engine import EngineSettings

    with pytest.raises(ValueError, match=r"job tags: 47 user tags"):
        EngineSettings("adapter", "3.11", "3.0", user_tags={f"k{i}": "v" for i in range(47)})


def _write_log(path: pathlib.Path, records: Sequence[UsageRecord]) -> None:
    path.write_text("".join(json.dumps(record.to_json()) + "\n" for record in records))


def test_usage_command_prints_the_summary_and_writes_the_chart(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "usage.jsonl"
    _write_log(log, [_record("a", ComputeKind.EC2_SPOT, 3600, vcpus=4), _record("b", ComputeKind.FARGATE, 1800)])
    chart = tmp_path / "cost.png"
    result = subprocess.run(
        [tool("scaler-batch"), "usage", str(log), "--chart", str(chart)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "tasks: 2 in 2 job(s) (success 2)" in result.stdout
    assert "vCPU-hours: 4.5000" in result.stdout
    assert "prices: ESTIMATE" in result.stdout
    assert "ec2-spot" in result.stdout and "fargate" in result.stdout
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_usage_command_says_what_is_wrong_with_a_bad_log(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "usage.jsonl"
    log.write_text('{"job_id": "x"}\n')
    result = subprocess.run([tool("scaler-batch"), "usage", str(log)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage.jsonl:1: not a usage record written by --usage-log" in result.stderr
