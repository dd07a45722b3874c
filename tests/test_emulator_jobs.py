"""Job life cycle in the emulator, observed only through boto3 over HTTP: states, Ref::, environment, logs,
arrays, ListJobs, cancel and terminate, timeouts and retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_emulator import BatchEmulator, EmulatorConfig
from batch_emulator.testing import describe_job, log_messages, wait_for_status, wait_until
from scaler_aws_batch.contracts import StatusReason

PRINT_ENV = r"""
import json, os, sys
keys = ["AWS_BATCH_JOB_ID", "AWS_BATCH_JOB_ATTEMPT", "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JQ_NAME",
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "JD", "OV", "EXTRA"]
print(json.dumps({"args": sys.argv[1:], "env": {k: os.environ.get(k) for k in keys}}))
"""

SLEEP = "import sys, time; time.sleep(float(sys.argv[1]))"
EXIT_WITH = "import sys; sys.exit(int(sys.argv[1]))"


@pytest.fixture(scope="module")
def module_emu() -> Iterator[BatchEmulator]:
    with BatchEmulator(EmulatorConfig(max_running_jobs=4)) as emulator:
        yield emulator


@pytest.fixture
def emu(module_emu: BatchEmulator) -> BatchEmulator:
    module_emu.reset_api_calls()
    module_emu.job_env.clear()
    return module_emu


def _payload(emu: BatchEmulator, job: dict[str, Any]) -> dict[str, Any]:
    stream = job["container"]["logStreamName"]
    lines = log_messages(emu.client("logs"), "/aws/batch/job", stream)
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def test_states_progress_in_aws_order() -> None:
    # Long enough delays that a poll every 10 ms sees every state even on a loaded machine.
    config = EmulatorConfig(delay_submitted=0.75, delay_pending=0.75, delay_runnable=0.75, delay_starting=0.75)
    with BatchEmulator(config) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "Ref::seconds"])
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName="s", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "1"})[
            "jobId"
        ]
        seen: list[str] = []

        def observe() -> bool:
            job = describe_job(batch, job_id)
            assert job is not None
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            return job["status"] in ("SUCCEEDED", "FAILED")

        wait_until(observe, "job to finish", interval=0.01)
        assert seen == ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED"]
        job = describe_job(batch, job_id)
        assert job is not None
        assert job["createdAt"] <= job["startedAt"] <= job["stoppedAt"]
        assert job["container"]["exitCode"] == 0
        assert len(job["attempts"]) == 1


def test_ref_substitution_environment_and_logs(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="print-env",
        command=["python3", "-c", PRINT_ENV, "Ref::a", "Ref::b", "Ref::missing", "--x=Ref::a"],
        parameters={"a": "A0", "b": "B0"},
        environment={"JD": "from-definition"},
    )
    emu.job_env["EXTRA"] = "from-emulator"
    batch = emu.client("batch")
    job_id = batch.submit_job(
        jobName="env",
        jobQueue=queue,
        jobDefinition=jobdef,
        parameters={"a": "A1"},
        containerOverrides={"environment": [{"name": "OV", "value": "from-override"}]},
    )["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    assert job["parameters"] == {"a": "A1", "b": "B0"}
    assert job["container"]["logStreamName"].startswith("print-env/default/")
    assert job["attempts"][0]["container"]["logStreamName"] == job["container"]["logStreamName"]
    out = _payload(emu, job)
    # Submit parameters override defaults; a placeholder with no value, or inside a longer word, stays literal.
    assert out["args"] == ["A1", "B0", "Ref::missing", "--x=Ref::a"]
    env = out["env"]
    assert env["AWS_BATCH_JOB_ID"] == job_id
    assert env["AWS_BATCH_JOB_ATTEMPT"] == "1"
    assert env["AWS_BATCH_JOB_ARRAY_INDEX"] is None
    assert env["AWS_BATCH_JQ_NAME"] == "emulator-queue"
    assert env["AWS_ENDPOINT_URL"] == emu.endpoint_url
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_DEFAULT_REGION"] == emu.region
    assert (env["JD"], env["OV"], env["EXTRA"]) == ("from-definition", "from-override", "from-emulator")


def test_command_override_is_substituted(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(job_definition_name="override", command=["false"])
    batch = emu.client("batch")
    job_id = batch.submit_job(
        jobName="cmd",
        jobQueue=queue,
        jobDefinition=jobdef,
        parameters={"p": "value"},
        containerOverrides={"command": ["python3", "-c", PRINT_ENV, "Ref::p"]},
    )["jobId"]
    job = wait_for_status(batch, job_id)
    assert job["status"] == "SUCCEEDED"
    assert job["container"]["command"][-1] == "value"
    assert _payload(emu, job)["args"] == ["value"]


def test_array_job_children_and_status_summary(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="array",
        command=["sh", "-c", 'echo "index=$AWS_BATCH_JOB_ARRAY_INDEX"; test "$AWS_BATCH_JOB_ARRAY_INDEX" != 3'],
    )
    batch = emu.client("batch")
    parent_id = batch.submit_job(jobName="arr", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 6})[
        "jobId"
    ]
    parent = wait_for_status(batch, parent_id)
    assert parent["status"] == "FAILED"  # child 3 failed
    assert parent["arrayProperties"]["size"] == 6
    summary = parent["arrayProperties"]["statusSummary"]
    assert summary["SUCCEEDED"] == 5
    assert summary["FAILED"] == 1
    assert sum(summary.values()) == 6
    children = batch.describe_jobs(jobs=[f"{parent_id}:{i}" for i in range(6)])["jobs"]
    assert [c["arrayProperties"]["index"] for c in children] == list(range(6))
    assert [c["jobId"] for c in children] == [f"{parent_id}:{i}" for i in range(6)]
    assert [c["status"] for c in children] == ["SUCCEEDED"] * 3 + ["FAILED"] + ["SUCCEEDED"] * 2
    assert children[3]["container"]["exitCode"] == 1
    logs = emu.client("logs")
    for child in children:
        lines = log_messages(logs, "/aws/batch/job", child["container"]["logStreamName"])
        assert lines == [f"index={child['arrayProperties']['index']}"]


def test_array_parent_is_pending_while_children_run_and_succeeds(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="array-sleep", command=["python3", "-c", SLEEP, "0.5"]
    )
    batch = emu.client("batch")
    parent_id = batch.submit_job(jobName="arr2", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 3})[
        "jobId"
    ]

    def pending_with_running_child() -> bool:
        job = describe_job(batch, parent_id)
        assert job is not None
        return bool(job["status"] == "PENDING" and job["arrayProperties"]["statusSummary"]["RUNNING"] > 0)

    wait_until(pending_with_running_child, "a running child under a PENDING parent")
    listed = batch.list_jobs(arrayJobId=parent_id, jobStatus="RUNNING")["jobSummaryList"]
    assert listed and all(j["jobId"].startswith(parent_id + ":") for j in listed)
    assert wait_for_status(batch, parent_id)["status"] == "SUCCEEDED"
    every = batch.list_jobs(arrayJobId=parent_id, filters=[{"name": "JOB_NAME", "values": ["arr2"]}])
    assert len(every["jobSummaryList"]) == 3


def test_list_jobs_semantics(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="list", command=["python3", "-c", SLEEP, "Ref::seconds"]
    )
    batch = emu.client("batch")
    done = batch.submit_job(jobName="Alpha-done", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "0"})
    wait_for_status(batch, done["jobId"])
    running = batch.submit_job(jobName="alpha-run", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "60"})
    other = batch.submit_job(jobName="beta", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "0"})
    wait_for_status(batch, running["jobId"], {"RUNNING"})
    wait_for_status(batch, other["jobId"])

    # No filter: only RUNNING jobs.
    assert [j["jobId"] for j in batch.list_jobs(jobQueue=queue)["jobSummaryList"]] == [running["jobId"]]
    assert {j["jobId"] for j in batch.list_jobs(jobQueue=queue, jobStatus="SUCCEEDED")["jobSummaryList"]} >= {
        done["jobId"],
        other["jobId"],
    }
    # JOB_NAME: case-insensitive, trailing * is a prefix match; jobStatus is ignored with a filter.
    by_prefix = batch.list_jobs(
        jobQueue=queue, jobStatus="RUNNING", filters=[{"name": "JOB_NAME", "values": ["ALPHA*"]}]
    )
    assert {j["jobId"] for j in by_prefix["jobSummaryList"]} == {done["jobId"], running["jobId"]}
    exact = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["BETA"]}])["jobSummaryList"]
    assert [j["jobId"] for j in exact] == [other["jobId"]]
    assert batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["alpha"]}])["jobSummaryList"] == []
    # JOB_DEFINITION by name (any revision) and by ARN.
    by_def = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_DEFINITION", "values": ["list"]}])
    assert len(by_def["jobSummaryList"]) == 3
    by_arn = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_DEFINITION", "values": [jobdef]}])
    assert len(by_arn["jobSummaryList"]) == 3
    # Newest first; created-at filters.
    newest_first = [j["jobId"] for j in by_def["jobSummaryList"]]
    assert newest_first[-1] == done["jobId"]
    done_created = describe_job(batch, done["jobId"])
    assert done_created is not None
    after = batch.list_jobs(
        jobQueue=queue, filters=[{"name": "AFTER_CREATED_AT", "values": [str(done_created["createdAt"])]}]
    )
    assert done["jobId"] not in {j["jobId"] for j in after["jobSummaryList"]}
    before = batch.list_jobs(
        jobQueue=queue, filters=[{"name": "BEFORE_CREATED_AT", "values": [str(done_created["createdAt"] + 1)]}]
    )
    assert done["jobId"] in {j["jobId"] for j in before["jobSummaryList"]}
    # One filter at a time.
    with pytest.raises(ClientError) as exc:
        batch.list_jobs(
            jobQueue=queue,
            filters=[{"name": "JOB_NAME", "values": ["a*"]}, {"name": "JOB_DEFINITION", "values": ["list"]}],
        )
    assert exc.value.response["Error"]["Code"] == "ClientException"
    # Pagination.
    pages = batch.get_paginator("list_jobs").paginate(
        jobQueue=queue, filters=[{"name": "JOB_DEFINITION", "values": ["list"]}], PaginationConfig={"PageSize": 2}
    )
    sizes = [len(p["jobSummaryList"]) for p in pages]
    assert sizes == [2, 1]
    batch.terminate_job(jobId=running["jobId"], reason="cleanup")
    wait_for_status(batch, running["jobId"])


def test_cancel_and_terminate_semantics() -> None:
    with BatchEmulator(EmulatorConfig(max_running_jobs=1)) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "Ref::seconds"])
        batch = emu.client("batch")
        first = batch.submit_job(jobName="first", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "60"})
        wait_for_status(batch, first["jobId"], {"RUNNING"})
        second = batch.submit_job(jobName="second", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "0"})
        wait_for_status(batch, second["jobId"], {"RUNNABLE"})

        # CancelJob on RUNNING: success, no effect.
        batch.cancel_job(jobId=first["jobId"], reason="too late")
        # CancelJob on RUNNABLE: FAILED with the reason.
        batch.cancel_job(jobId=second["jobId"], reason="not needed")
        cancelled = wait_for_status(batch, second["jobId"])
        assert (cancelled["status"], cancelled["statusReason"]) == ("FAILED", "not needed")
        assert cancelled["isCancelled"] is True
        assert cancelled["attempts"] == []
        still = describe_job(batch, first["jobId"])
        assert still is not None and still["status"] == "RUNNING"

        # TerminateJob on RUNNING: SIGTERM, FAILED with the reason, not retried.
        batch.terminate_job(jobId=first["jobId"], reason="stop it")
        terminated = wait_for_status(batch, first["jobId"])
        assert (terminated["status"], terminated["statusReason"]) == ("FAILED", "stop it")
        assert terminated["isTerminated"] is True
        assert terminated["container"]["exitCode"] == 143
        assert len(terminated["attempts"]) == 1

        # TerminateJob on a job not yet STARTING cancels it.
        third = batch.submit_job(jobName="third", jobQueue=queue, jobDefinition=jobdef, parameters={"seconds": "0"})
        batch.terminate_job(jobId=third["jobId"], reason="early")
        early = wait_for_status(batch, third["jobId"])
        assert (early["status"], early["statusReason"]) == ("FAILED", "early")
        # Unknown ids: success, no effect.
        batch.cancel_job(jobId="no-such-job", reason="x")
        batch.terminate_job(jobId="no-such-job", reason="x")


def test_a_job_that_finishes_before_terminate_takes_effect_stays_succeeded() -> None:
    with BatchEmulator(EmulatorConfig(terminate_delay_seconds=30.0)) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "0.3"])
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName="quick", jobQueue=queue, jobDefinition=jobdef)["jobId"]
        wait_for_status(batch, job_id, {"RUNNING", "SUCCEEDED"})
        batch.terminate_job(jobId=job_id, reason="too slow to act")
        job = wait_for_status(batch, job_id)
        assert job["status"] == "SUCCEEDED"
        assert job["container"]["exitCode"] == 0


def test_cancelling_an_array_parent_cancels_waiting_children() -> None:
    with BatchEmulator(EmulatorConfig(max_running_jobs=1)) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "1"])
        batch = emu.client("batch")
        parent_id = batch.submit_job(jobName="arr", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 4})[
            "jobId"
        ]
        wait_for_status(batch, f"{parent_id}:0", {"RUNNING"})
        batch.cancel_job(jobId=parent_id, reason="abandon")
        parent = wait_for_status(batch, parent_id)
        assert parent["status"] == "FAILED"
        summary = parent["arrayProperties"]["statusSummary"]
        assert summary["SUCCEEDED"] == 1  # the running child is not cancelled
        assert summary["FAILED"] == 3
        children = batch.describe_jobs(jobs=[f"{parent_id}:{i}" for i in range(1, 4)])["jobs"]
        assert {c["statusReason"] for c in children} == {"abandon"}


def test_terminating_an_array_parent_terminates_running_children() -> None:
    with BatchEmulator(EmulatorConfig(max_running_jobs=2)) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "60"])
        batch = emu.client("batch")
        parent_id = batch.submit_job(jobName="arr", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 3})[
            "jobId"
        ]
        wait_for_status(batch, f"{parent_id}:0", {"RUNNING"})
        batch.terminate_job(jobId=parent_id, reason="kill all")
        parent = wait_for_status(batch, parent_id)
        assert parent["status"] == "FAILED"
        assert parent["arrayProperties"]["statusSummary"]["FAILED"] == 3
        assert emu.running_processes() == 0


def test_timeout_kills_the_attempt_and_is_not_retried() -> None:
    config = EmulatorConfig(timeout_override_seconds=0.5, kill_grace_seconds=0.5)
    with BatchEmulator(config) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(
            command=["python3", "-c", SLEEP, "60"], timeout_seconds=60, retry_strategy={"attempts": 3}
        )
        ignores_term = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)"
        )
        batch = emu.client("batch")
        polite = batch.submit_job(jobName="polite", jobQueue=queue, jobDefinition=jobdef)["jobId"]
        stubborn = batch.submit_job(
            jobName="stubborn",
            jobQueue=queue,
            jobDefinition=jobdef,
            containerOverrides={"command": ["python3", "-c", ignores_term]},
        )["jobId"]
        for job_id, exit_code in ((polite, 143), (stubborn, 137)):
            job = wait_for_status(batch, job_id)
            assert job["status"] == "FAILED"
            assert job["statusReason"] == StatusReason.TIMEOUT
            assert len(job["attempts"]) == 1
            assert job["attempts"][0]["container"]["exitCode"] == exit_code
            assert job["timeout"] == {"attemptDurationSeconds": 60}


def test_time_scale_shrinks_aws_timeouts() -> None:
    with BatchEmulator(EmulatorConfig(time_scale=0.01)) as emu:  # 60 s -> 0.6 s, grace 30 s -> 0.3 s
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "60"])
        batch = emu.client("batch")
        job_id = batch.submit_job(
            jobName="t", jobQueue=queue, jobDefinition=jobdef, timeout={"attemptDurationSeconds": 60}
        )["jobId"]
        job = wait_for_status(batch, job_id)
        assert (job["status"], job["statusReason"]) == ("FAILED", StatusReason.TIMEOUT)


def test_retries_until_attempts_run_out_and_evaluate_on_exit_exit_stops_them(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(
        job_definition_name="exit-with",
        command=["sh", "-c", 'echo "attempt=$AWS_BATCH_JOB_ATTEMPT"; exit "$0"', "Ref::code"],
        retry_strategy={"attempts": 3, "evaluateOnExit": [{"onExitCode": "3", "action": "EXIT"}]},
    )
    batch = emu.client("batch")
    stop = batch.submit_job(jobName="exit3", jobQueue=queue, jobDefinition=jobdef, parameters={"code": "3"})["jobId"]
    retry = batch.submit_job(jobName="exit4", jobQueue=queue, jobDefinition=jobdef, parameters={"code": "4"})["jobId"]
    stopped = wait_for_status(batch, stop)
    assert stopped["status"] == "FAILED"
    assert len(stopped["attempts"]) == 1
    assert stopped["statusReason"] == StatusReason.ESSENTIAL_CONTAINER_EXITED
    retried = wait_for_status(batch, retry)
    assert retried["status"] == "FAILED"
    assert len(retried["attempts"]) == 3  # no entry matched: RETRY until attempts run out
    assert [a["container"]["exitCode"] for a in retried["attempts"]] == [4, 4, 4]
    streams = [a["container"]["logStreamName"] for a in retried["attempts"]]
    assert len(set(streams)) == 3
    logs = emu.client("logs")
    assert [log_messages(logs, "/aws/batch/job", s) for s in streams] == [
        ["attempt=1"],
        ["attempt=2"],
        ["attempt=3"],
    ]


def test_job_tags(emu: BatchEmulator) -> None:
    queue, jobdef = emu.create_queue_and_job_definition(job_definition_name="tags", command=["true"])
    batch = emu.client("batch")
    submitted = batch.submit_job(jobName="tagged", jobQueue=queue, jobDefinition=jobdef, tags={"owner": "adapter"})
    job = describe_job(batch, submitted["jobId"])
    assert job is not None and job["tags"] == {"owner": "adapter"}
    batch.tag_resource(resourceArn=submitted["jobArn"], tags={"extra": "1"})
    assert batch.list_tags_for_resource(resourceArn=submitted["jobArn"])["tags"] == {"owner": "adapter", "extra": "1"}
    batch.untag_resource(resourceArn=submitted["jobArn"], tagKeys=["owner"])
    assert batch.list_tags_for_resource(resourceArn=submitted["jobArn"])["tags"] == {"extra": "1"}
    # Tags on other resources still go to moto.
    batch.tag_resource(resourceArn=queue, tags={"team": "q"})
    assert batch.list_tags_for_resource(resourceArn=queue)["tags"]["team"] == "q"


def test_concurrency_bound_keeps_jobs_runnable() -> None:
    with BatchEmulator(EmulatorConfig(max_running_jobs=2)) as emu:
        queue, jobdef = emu.create_queue_and_job_definition(command=["python3", "-c", SLEEP, "0.3"])
        batch = emu.client("batch")
        parent_id = batch.submit_job(jobName="arr", jobQueue=queue, jobDefinition=jobdef, arrayProperties={"size": 8})[
            "jobId"
        ]
        peak = 0

        def done() -> bool:
            nonlocal peak
            job = describe_job(batch, parent_id)
            assert job is not None
            summary = job["arrayProperties"]["statusSummary"]
            peak = max(peak, summary["RUNNING"] + summary["STARTING"])
            return job["status"] in ("SUCCEEDED", "FAILED")

        wait_until(done, "array to finish", interval=0.01)
        assert 1 <= peak <= 2
        assert describe_job(batch, parent_id)["status"] == "SUCCEEDED"  # type: ignore[index]
