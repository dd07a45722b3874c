"""AWS Batch emulator for tests and benchmarks: real HTTP, real moto, Batch jobs run as local processes.

    with BatchEmulator(EmulatorConfig(max_running_jobs=4)) as emu:
        queue_arn, jobdef_arn = emu.create_queue_and_job_definition(command=["python3", "-c", "print(1)"])
        batch = emu.client("batch")
        job_id = batch.submit_job(jobName="j", jobQueue=queue_arn, jobDefinition=jobdef_arn)["jobId"]

Nothing in the project's runtime code may import this package: jobs are observed only through boto3.
"""

from batch_emulator.config import ApiCalls, EmulatorConfig, Faults, JobInfo
from batch_emulator.emulator import DEFAULT_COMMAND, BatchEmulator
from batch_emulator.rules import BatchApiError

__all__ = ["DEFAULT_COMMAND", "ApiCalls", "BatchApiError", "BatchEmulator", "EmulatorConfig", "Faults", "JobInfo"]
