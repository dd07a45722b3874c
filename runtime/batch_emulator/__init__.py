"""AWS Batch emulator for tests and benchmarks: real HTTP, real moto, Batch jobs run as local processes.

    with BatchEmulator(EmulatorConfig(max_running_jobs=4)) as emu:
        queue_arn, jobdef_arn = emu.create_queue_and_job_definition(command=["python3", "-c", "print(1)"])
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName="j", jobQueue=queue_arn, jobDefinition=jobdef_arn)["jobId"]

Nothing in the project's runtime code may import this package: jobs are observed only through boto3
(`emu.endpoint_url`, or `AWS_ENDPOINT_URL` in a child process).

Reproduced as AWS does (docs/aws-limits.md lists each with its public source): the 30 KiB SubmitJob limit, the
8,192-character container-overrides limit (accepted, then FAILED at start), 100 ids per DescribeJobs, job-name
rules, array size 2..10,000, timeouts >= 60 s (SIGTERM, SIGKILL after 30 s, not retried), retry strategies with
evaluateOnExit, Spot-reclaim reasons, CancelJob/TerminateJob semantics, array status summaries, ListJobs filters,
HTTP 429 TooManyRequestsException.

Approximations (each a documented choice, since AWS does not document it or it cannot be observed here):
* Error messages not quoted in docs/aws-limits.md are paraphrases; callers must branch on the code (ClientException).
* `describe_jobs(jobs=[])` returns no jobs (moto returns all of them).
* `Ref::name` is substituted only when it is a whole command element; a placeholder without a value stays literal.
* A Spot reclaim kills the attempt's process group with SIGKILL and reports no exit code.
* evaluateOnExit: an absent reason is matched as "" (so `*` matches it); an absent exit code matches no onExitCode.
* Cancel/Terminate of an unknown job id succeeds and does nothing.
* A job whose overrides are too long fails without an attempt; a job whose command is not found fails its attempt
  with reason `CannotStartContainerError: ...` (and may be retried).
* Timeouts and grace periods can be shrunk with the test-only knobs `time_scale` / `timeout_override_seconds`.
* Faults (throttling, 5xx) apply to the job APIs the emulator serves; the TPS limits apply to any Batch operation.
* Scheduling is FIFO across queues, bounded by `max_running_jobs`; no fair share, priorities or dependsOn.
* moto's state is process-global: one emulator per process at a time.
"""

from batch_emulator.config import ApiCalls, EmulatorConfig, Faults, JobInfo
from batch_emulator.emulator import DEFAULT_COMMAND, BatchEmulator
from batch_emulator.rules import BatchApiError

__all__ = ["DEFAULT_COMMAND", "ApiCalls", "BatchApiError", "BatchEmulator", "EmulatorConfig", "Faults", "JobInfo"]
