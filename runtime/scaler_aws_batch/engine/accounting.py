"""Usage accounting: what the engine learns about each job (from describes and from results) goes to the usage log.

A job whose tasks are all resolved is still owed one describe (its own final figures, or its array parent's queue
and resources) before its tasks are recorded; it is described in later rounds, at most ``USAGE_TRIES`` times.
"""

from __future__ import annotations

from scaler_aws_batch.backends.base import JobStatus
from scaler_aws_batch.engine.ledger import JobRecord, Tentative
from scaler_aws_batch.usage import JobUsage, Outcome, UsageRecorder

#: Answered describes an untracked job gets to report its final usage before it is recorded without it.
USAGE_TRIES = 5


def known_usage(job: JobRecord) -> JobUsage:
    """What the adapter itself knows of a job, for backends whose describe reports no usage."""
    return JobUsage(queue=job.queue, vcpus=float(job.resources.vcpus or 0),
                    memory_mib=job.resources.memory_mib or 0, gpus=job.resources.gpus or 0)  # fmt: skip


class UsageAccounts:
    def __init__(self, recorder: UsageRecorder) -> None:
        self.recorder = recorder
        self.owed: dict[str, JobRecord] = {}  # untracked jobs still owed a describe for the usage log

    def owe(self, job: JobRecord) -> None:
        """Every task of ``job`` is resolved (or resolving). Its usage still needs one describe of the job (its own
        figures) or of its array parent (its children's queue and resources), made in a later describe round."""
        if not (job.described_final or job.parent_described):
            self.owed[job.job_id] = job

    def forgive(self, job_id: str) -> None:
        """The job is tracked again (a listed result was refused): its describes come through the ledger."""
        self.owed.pop(job_id, None)

    def note(self, job: JobRecord, status: JobStatus) -> None:
        """Take what a describe of ``job`` says for the usage log: an array parent's queue and resources (its
        children are recorded from their results), or a finished single job's own figures."""
        if status.array_summary is not None or job.is_array:
            if not job.parent_described:
                job.parent_described = True
                self.recorder.parent_described(job.job_id, status.usage or known_usage(job))
        elif status.state.is_final:
            job.described_final = True
            job.final_usage = status.usage

    def described_owed(self, job: JobRecord, status: JobStatus | None) -> None:
        """An answered describe of a job owed one for usage (``status`` None: answered without it)."""
        if status is not None:
            self.note(job, status)
        job.usage_tries += 1
        if job.described_final or job.parent_described or job.usage_tries >= USAGE_TRIES:
            self.settle(job)

    def settle(self, job: JobRecord) -> None:
        """A job no longer tracked got its usage describe (or ran out of tries): record what waited for it."""
        del self.owed[job.job_id]
        if not job.parent_described and job.is_array:
            job.parent_described = True
            self.recorder.parent_described(job.job_id, known_usage(job))
        for task_id, outcome in job.usage_pending:
            self.recorder.record(job.job_id, [task_id], outcome, job.final_usage)
        job.usage_pending.clear()

    def record_resolved(
        self, task_id: str, status: JobStatus, kind: Outcome, measured: JobUsage, tentative: Tentative | None
    ) -> None:
        """Usage of a task resolved from its result: a described job's own figures; an array child's from its
        runner and its parent's describe; a single job's once its describe (owed, see :meth:`owe`) says final."""
        if tentative is None:
            self.recorder.record(status.job_id, [task_id], kind, status.usage)
            return
        job, index = tentative
        if index is not None:
            self.recorder.record_child(status.job_id, task_id, kind, measured)
        elif job.job_id in self.owed:
            job.usage_pending.append((task_id, kind))
        else:
            self.recorder.record(job.job_id, [task_id], kind, job.final_usage)

    def record_failed(self, task_id: str, status: JobStatus) -> None:
        self.recorder.record(status.job_id, [task_id], Outcome.JOB_FAILED, status.usage)

    def settle_all(self) -> int:
        """At exit: record every owed job without its describe. Returns how many tasks waited for one."""
        left = sum(len(job.usage_pending) for job in self.owed.values())
        for job in list(self.owed.values()):
            self.settle(job)
        return left + self.recorder.flush_unknown()
