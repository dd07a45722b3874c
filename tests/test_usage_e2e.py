"""Usage log end to end: the adapter on the aws-batch backend against the Batch emulator, with a Spot default queue
and an On-Demand queue (managed compute environments), a real Scaler scheduler and client. The usage log written at
exit must account for exactly the jobs the emulator ran: their task ids, resources, attempts, times and placement.
Single jobs carry Batch's own figures; array children (never described, to save a DescribeJobs call per 100
children) carry their runner's times, which lie within the child's own, and their parent's queue and resources.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from cdk_support import tool
from conftest import WAIT_SECONDS
from harness import BUCKET, SPOT_RETRY_STRATEGY, AwsHarness, create_signing_secret
from scaler_aws_batch.contracts import SIGNING_SECRET_ENV, JobTag
from scaler_aws_batch.usage import ComputeKind, Outcome, UsageRecord, summarize
from scaler_aws_batch.usage_report import read_usage_log

pytestmark = pytest.mark.e2e

MAPPED = 12  # one array job
ON_DEMAND = 2  # single jobs on the On-Demand queue, with 2 vCPUs and 4 GiB each
USER_TAGS = {"team": "research", "project": "usage-e2e"}


def _describe_all(batch: Any, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Every finished single job and array child the emulator ran on ``queues``, by job id."""
    ids: list[str] = []
    for queue in queues:
        for page in batch.get_paginator("list_jobs").paginate(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["scaler*"]}]
        ):
            ids.extend(summary["jobId"] for summary in page["jobSummaryList"])
    jobs: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        jobs.extend(batch.describe_jobs(jobs=ids[start : start + 100])["jobs"])
    ran: dict[str, dict[str, Any]] = {}
    for job in jobs:
        size = job.get("arrayProperties", {}).get("size")
        if size is None:
            ran[job["jobId"]] = job
            continue
        children = [f"{job['jobId']}:{index}" for index in range(size)]
        for child in batch.describe_jobs(jobs=children)["jobs"]:
            ran[child["jobId"]] = child
    return ran


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[UsageRecord], dict[str, Any], str, str]]:
    work_dir = tmp_path_factory.mktemp("usage")
    usage_log = work_dir / "usage.jsonl"
    harness = AwsHarness(work_dir)
    with harness.emulator:
        emulator = harness.emulator
        harness.signing_secret, _ = create_signing_secret(emulator)
        signing = {SIGNING_SECRET_ENV: harness.signing_secret}
        spot_queue, job_definition = emulator.create_queue_and_job_definition(
            queue_name="usage-spot", compute_environment_name="usage-spot-ce", compute_type="SPOT",
            retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600, environment=signing,
        )  # fmt: skip
        on_demand_queue, _ = emulator.create_queue_and_job_definition(
            queue_name="usage-on-demand", compute_environment_name="usage-od-ce", compute_type="EC2",
            job_definition_name="usage-unused", retry_strategy=SPOT_RETRY_STRATEGY, timeout_seconds=3600,
            environment=signing,
        )  # fmt: skip
        emulator.client("s3").create_bucket(Bucket=BUCKET)
        harness.queue, harness.job_definition = spot_queue, job_definition
        tags = [item for key, value in USER_TAGS.items() for item in ("--tag", f"{key}={value}")]
        extra = ["--on-demand-queue", on_demand_queue, "--usage-log", str(usage_log), *tags]
        with harness.variant(work_dir, extra) as (client, adapter):
            assert list(client.map(abs, [-x for x in range(MAPPED)])) == list(range(MAPPED))
            big = [
                client.submit_verbose(pow, args=(2, n), kwargs={}, capabilities={"on_demand": 1, "vcpus": 2,
                                                                                  "memory": 4096})
                for n in range(ON_DEMAND)
            ]  # fmt: skip
            assert [future.result(timeout=WAIT_SECONDS) for future in big] == [2**n for n in range(ON_DEMAND)]
            with pytest.raises(ValueError, match="invalid literal"):  # the task raises: a task-error record
                client.submit(lambda: int("not a number")).result(timeout=WAIT_SECONDS)
        adapter_log = adapter.log_text()
        ran = _describe_all(emulator.client("batch"), [spot_queue, on_demand_queue])
        yield read_usage_log(str(usage_log)), ran, adapter_log, str(usage_log)


def test_usage_log_has_one_record_per_job_the_emulator_ran(
    run: tuple[list[UsageRecord], dict[str, Any], str, str],
) -> None:
    records, ran, _, _ = run
    assert sorted(record.job_id for record in records) == sorted(ran)
    # The probe task, the mapped tasks, the On-Demand tasks and the failing one: each recorded once.
    assert len(records) == 1 + MAPPED + ON_DEMAND + 1
    task_ids = [task for record in records for task in record.task_ids]
    assert len(task_ids) == len(set(task_ids)) == len(records)
    for record in records:
        job = ran[record.job_id]
        if ":" not in record.job_id:  # a single job: tagged with its task's id
            assert record.task_ids == (job["tags"][JobTag.TASK_ID],)
        attempts = [(a["startedAt"], a["stoppedAt"]) for a in job["attempts"]]
        assert record.usage.attempts == len(attempts) >= 1
        batch_seconds = sum(stop - start for start, stop in attempts) / 1000.0
        assert record.usage.queue == job["jobQueue"]
        if ":" not in record.job_id:  # Batch's own figures
            assert record.usage.created_at == job["createdAt"] / 1000.0
            assert record.usage.run_seconds == pytest.approx(batch_seconds)
            assert record.usage.started_at == job["startedAt"] / 1000.0
            assert record.usage.stopped_at == job["stoppedAt"] / 1000.0
        else:  # its runner's: within the container's run (Batch's times are whole milliseconds); its parent's
            assert record.usage.created_at is not None and record.usage.created_at <= job["createdAt"] / 1000.0
            assert record.usage.started_at is not None and record.usage.stopped_at is not None
            assert job["startedAt"] / 1000.0 - 0.001 <= record.usage.started_at <= record.usage.stopped_at
            assert record.usage.stopped_at <= job["stoppedAt"] / 1000.0 + 0.001
            assert 0 < record.usage.run_seconds <= batch_seconds + 0.002


def test_usage_totals_match_the_jobs_the_emulator_ran(run: tuple[list[UsageRecord], dict[str, Any], str, str]) -> None:
    records, ran, _, _ = run
    seconds_by_job = {record.job_id: record.usage.run_seconds for record in records}  # checked against Batch above
    vcpu_hours = gib_hours = 0.0
    for job_id, job in ran.items():
        requirements = {r["type"]: float(r["value"]) for r in job["container"]["resourceRequirements"]}
        vcpu_hours += requirements["VCPU"] * seconds_by_job[job_id] / 3600
        gib_hours += requirements["MEMORY"] / 1024 * seconds_by_job[job_id] / 3600
    summary = summarize(records)
    assert summary.total.tasks == len(ran)
    assert summary.total.vcpu_hours == pytest.approx(vcpu_hours)
    assert summary.total.gib_hours == pytest.approx(gib_hours)
    assert summary.total.gpu_hours == 0
    assert summary.by_outcome == {Outcome.SUCCESS: len(ran) - 1, Outcome.TASK_ERROR: 1}


def test_placement_follows_the_queue_each_job_went_to(run: tuple[list[UsageRecord], dict[str, Any], str, str]) -> None:
    records, _, _, _ = run
    kinds: dict[ComputeKind, list[UsageRecord]] = {}
    for record in records:
        kinds.setdefault(record.usage.compute, []).append(record)
    assert set(kinds) == {ComputeKind.EC2_SPOT, ComputeKind.EC2_ON_DEMAND}
    assert len(kinds[ComputeKind.EC2_ON_DEMAND]) == ON_DEMAND
    for record in kinds[ComputeKind.EC2_ON_DEMAND]:
        assert (record.usage.vcpus, record.usage.memory_mib) == (2.0, 4096)
        assert record.usage.compute_environment == "usage-od-ce"
    assert {r.usage.compute_environment for r in kinds[ComputeKind.EC2_SPOT]} == {"usage-spot-ce"}


#: The one-line usage summary the worker logs at exit (UsageSummary.one_line).
_SUMMARY = re.compile(r"usage: (\d+) task\(s\) in (\d+) job\(s\) \[([^\]]*)\]; ([\d.]+) vCPU-h, ([\d.]+) GiB-h")


def test_jobs_carry_the_user_tags_and_the_worker_logs_the_summary_at_exit(
    run: tuple[list[UsageRecord], dict[str, Any], str, str],
) -> None:
    records, ran, adapter_log, _ = run
    for job in ran.values():
        assert {key: job["tags"].get(key) for key in USER_TAGS} == USER_TAGS
    # Counts and kinds, not the exact line: its resource-hours are rounded figures of measured run times.
    lines = _SUMMARY.findall(adapter_log)
    assert len(lines) == 1, lines
    tasks, jobs, kinds, vcpu_hours, gib_hours = lines[0]
    summary = summarize(records)
    assert (int(tasks), int(jobs)) == (summary.total.tasks, summary.total.jobs) and int(tasks) == len(ran)
    logged_kinds = dict(item.rsplit(" ", 1) for item in kinds.split(", "))
    assert {kind: int(count) for kind, count in logged_kinds.items()} == {
        kind.value: totals.tasks for kind, totals in summary.by_compute.items()
    }
    assert float(vcpu_hours) == pytest.approx(summary.total.vcpu_hours, abs=1e-4)
    assert float(gib_hours) == pytest.approx(summary.total.gib_hours, abs=1e-4)


def test_usage_command_prints_the_runs_summary(run: tuple[list[UsageRecord], dict[str, Any], str, str]) -> None:
    records, _, _, usage_log = run
    result = subprocess.run([tool("scaler-batch"), "usage", usage_log], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tasks: {len(records)} in {len(records)} job(s)")
    assert "usage-spot" in result.stdout and "usage-on-demand" in result.stdout
    assert "ec2-spot" in result.stdout and "ec2-on-demand" in result.stdout
    print("\n" + result.stdout)


def test_the_usage_log_holds_no_task_data(run: tuple[list[UsageRecord], dict[str, Any], str, str]) -> None:
    _, _, _, usage_log = run
    text = pathlib.Path(usage_log).read_text()
    assert "not a number" not in text and "invalid literal" not in text
