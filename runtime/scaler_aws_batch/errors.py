"""Exceptions a Scaler client can receive from a task that ran through scaler-aws-batch.

They are pickled with plain ``pickle`` into Scaler's failure format, so the client needs this package installed
(``pip install scaler-aws-batch``) to see them with their own type. Each message says what to fix.
"""

from __future__ import annotations


class ScalerBatchError(Exception):
    """Base class of every error this package raises."""


# --- wire format and payloads -------------------------------------------------------------------------------------


class PayloadError(ScalerBatchError):
    """A job payload could not be read: corrupt, tampered with, or in a format this runner does not know."""


class PayloadVersionError(PayloadError):
    """The payload was written by a newer or older adapter than this runner understands."""


class PayloadSignatureError(PayloadError):
    """A job payload is unsigned or its signature does not match: it was not written by an adapter holding the
    key, or was changed after it was signed. The runner refuses it before unpickling anything."""


class PayloadReplacedError(PayloadError):
    """The stored payload object is not the one the job was submitted with (its digest differs from the one in the
    job's parameters): it was replaced after submission, perhaps by another genuine payload. Nothing of it is run."""


class SigningKeyError(ScalerBatchError):
    """The signing key ring is missing, unreadable or too weak (the message names the secret or file)."""


class ResultRejectedError(ScalerBatchError):
    """A stored result failed its checks: unsigned, tampered with, or not written for this submission of the task
    (planted before the job ran, or left by an earlier run). Nothing of it was unpickled."""


class ResultFromAnotherSubmissionError(ResultRejectedError):
    """A genuinely signed result of the same task, written by another submission of it (another nonce): two
    submissions of one task ran at once, or an earlier one left its result."""


class PythonVersionMismatchError(ScalerBatchError):
    """The client pickled the task under a Python major.minor that differs from the job image's."""


class CloudpickleVersionMismatchError(ScalerBatchError):
    """The client pickled the task with a cloudpickle major version that differs from the job image's."""


class ResultSerializationError(ScalerBatchError):
    """The task finished but its return value could not be serialized with the client's serializer."""


# --- object stores ------------------------------------------------------------------------------------------------


class StoreError(ScalerBatchError):
    """An object store call failed (missing bucket, no permission, network)."""


class StoreUnavailableError(StoreError):
    """The store did not serve a call for a transient reason (throttling such as S3 SlowDown, server errors,
    expired credentials, no connection); the same call may succeed later."""


class ObjectMissingError(StoreError):
    """An object that should exist in the store does not."""


# --- job outcomes -------------------------------------------------------------------------------------------------


class JobFailedError(ScalerBatchError):
    """The job ended FAILED without writing a task result; the message carries its reason and last log lines."""

    def __init__(self, message: str, job_id: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[type[JobFailedError], tuple[str, str, int | None]]:
        return (type(self), (str(self), self.job_id, self.exit_code))


class JobTimeoutError(JobFailedError):
    """The job ran longer than its timeout and was stopped (Batch does not retry timeouts)."""


class SpotRetriesExhaustedError(JobFailedError):
    """Every attempt of the job lost its Spot instance."""


class OverridesTooLongError(JobFailedError):
    """AWS refused to start the job because its container overrides exceeded 8,192 characters."""


class JobOutOfMemoryError(JobFailedError):
    """The container was killed for using more memory than it asked for (exit code 137)."""


class JobVanishedError(JobFailedError):
    """The backend stopped reporting the job, so its result can never arrive."""


class PayloadRejectedError(JobFailedError):
    """The job refused its payload (unsigned, tampered with, or from an adapter of another release or key)."""


class PayloadTamperedError(PayloadRejectedError):
    """The job refused its stored payload because the object was replaced after submission (tampering by someone
    with write access to the bucket); none of it ran."""


class ResultMissingError(JobFailedError):
    """The job SUCCEEDED but its result object is not in the store (deleted, or written elsewhere)."""


class SubmitError(ScalerBatchError):
    """The backend refused to accept the job (missing queue, bad credentials, request too large)."""


class CapabilityError(SubmitError):
    """The task's capabilities ask for something that can never run (a negative or zero size, a timeout under the
    minimum, an unknown name, more than any instance of the queue has); the message says what to change."""


class CapabilitiesLostError(CapabilityError):
    """The task asked for capabilities, but the scheduler forwarded them as ``[TaskCapability(name='', value=0)]``:
    Scaler 2.9.0's stock ``scaler_scheduler`` drops every name and value. ``scaler-batch scheduler`` (a drop-in with
    the same flags) forwards them; the task is refused rather than run with resources it did not ask for."""


# --- command tasks ------------------------------------------------------------------------------------------------


class CommandFailedError(ScalerBatchError):
    """A command task exited non-zero. Carries the exit code and the tail of its stderr."""

    def __init__(self, command: str, exit_code: int, stderr_tail: str) -> None:
        super().__init__(f"command exited with code {exit_code}: {command!r}\n--- stderr (tail) ---\n{stderr_tail}")
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __reduce__(self) -> tuple[type[CommandFailedError], tuple[str, int, str]]:
        return (type(self), (self.command, self.exit_code, self.stderr_tail))


class UnpicklableExceptionError(ScalerBatchError):
    """The task raised an exception that cannot be pickled; this keeps its type name, message and traceback text."""


# --- backend calls (every backend and the AWS call layer raise these) ---


class BackendError(ScalerBatchError):
    """A backend call failed in a way the caller should report (bad configuration, rejected request)."""


class JobRejectedError(BackendError):
    """The backend refused a job outright (e.g. a queue that does not exist, a request that is too large)."""


class BackendUnavailableError(BackendError):
    """The backend did not serve a call for a transient reason (throttling, server errors, expired credentials, no
    connection): nothing is wrong with the request, so callers pause and try again. ``hint`` says what an operator
    can do about this class of error. ``maybe_applied``: the call may have taken effect all the same (a server error
    or a lost connection, unlike throttling or refused credentials)."""

    def __init__(self, message: str, *, hint: str = "", maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.maybe_applied = maybe_applied
