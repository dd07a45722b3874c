"""Names shared by the CDK stack, the runtime, the emulator, the tests and the bench.

Each name is written here once and imported everywhere else, so renaming one is a one-line change that every
reader follows (no literal copies held together by "do not rename" comments).
"""

from __future__ import annotations

from typing import Final

# --- the job command and its one parameter ------------------------------------------------------------------------

#: The name of the one job parameter the runner reads.
PAYLOAD_PARAMETER: Final = "payload"
#: The job-definition command every backend runs. ``Ref::payload`` is replaced by the payload parameter, exactly as
#: AWS Batch substitutes job parameters. The CDK job definition uses this list verbatim.
RUNNER_COMMAND: Final[tuple[str, ...]] = ("scaler-batch", "run-job", "--payload", f"Ref::{PAYLOAD_PARAMETER}")


# --- the job's container ------------------------------------------------------------------------------------------

#: The job container's only writable path: a scratch volume (the root filesystem is read-only), also its TMPDIR.
JOB_SCRATCH_PATH: Final = "/tmp"
#: The name of that volume in the job definition.
JOB_SCRATCH_VOLUME: Final = "scratch"


class StackOutput:
    """CloudFormation output keys of the CDK stack; the worker reads them (``--stack`` / ``--stack-outputs``)."""

    JOB_QUEUE_ARN: Final = "JobQueueArn"
    ON_DEMAND_JOB_QUEUE_ARN: Final = "OnDemandJobQueueArn"
    GPU_JOB_QUEUE_ARN: Final = "GpuJobQueueArn"
    JOB_DEFINITION_ARN: Final = "JobDefinitionArn"
    BUCKET_NAME: Final = "BucketName"
    PAYLOAD_PREFIX: Final = "PayloadPrefix"
    REGION: Final = "Region"
    LOG_GROUP_NAME: Final = "LogGroupName"
    ADAPTER_POLICY_ARN: Final = "AdapterPolicyArn"
    #: JSON object of the ``cdk.json`` ``job_tags``; present only when there are some.
    JOB_TAGS: Final = "JobTags"
    #: The Secrets Manager secret holding the key ring that signs payloads and results.
    SIGNING_SECRET_ARN: Final = "SigningSecretArn"
    #: The job image's Python major.minor: the worker refuses to start when its clients' version differs.
    PYTHON_VERSION: Final = "PythonVersion"
    #: The job image's CPU architecture, ``x86_64`` or ``arm64`` (:class:`Architecture`).
    ARCHITECTURE: Final = "Architecture"

    @classmethod
    def every(cls) -> frozenset[str]:
        """Every output key the stack can have (the GPU queue's only with a GPU queue, JobTags only with tags)."""
        return frozenset(value for name, value in vars(cls).items() if name.isupper())


# --- signing keys (see signing.py) ---------------------------------------------------------------------------------

#: Job environment naming the Secrets Manager secret (ARN or name) with the signing key ring; set by the stack's job
#: definition. The adapter reads the same variable as its ``--signing-secret`` setting.
SIGNING_SECRET_ENV: Final = "SCALER_BATCH_SIGNING_SECRET"
#: Job environment naming a local key file (mode 0600) with the key ring; set by the local backend.
SIGNING_KEY_FILE_ENV: Final = "SCALER_BATCH_SIGNING_KEY_FILE"


class RunnerExit:
    """Exit codes of ``scaler-batch run-job`` that the adapter interprets."""

    OK: Final = 0
    USAGE: Final = 64  # sysexits EX_USAGE: bad command line or environment
    #: EX_DATAERR: an unsigned, tampered or unknown-version payload, refused before anything was unpickled.
    BAD_PAYLOAD: Final = 65
    #: EX_NOINPUT: the stored payload object is not the one the job was submitted with (replaced after submission),
    #: refused before any of it was read past its header.
    PAYLOAD_REPLACED: Final = 66
    STORE: Final = 74  # EX_IOERR: could not read the payload or write a result


class Architecture:
    """The job image's CPU architecture as the ``architecture`` context key and the ``Architecture`` output say it
    (``platform.machine()`` of the job's interpreter)."""

    X86_64: Final = "x86_64"
    ARM64: Final = "arm64"


# --- the Batch emulator's stand-alone entry point (``python -m batch_emulator``) -------------------------------------

#: The line it prints once its endpoint serves, followed by the endpoint URL; the demo reads the URL from it.
EMULATOR_ENDPOINT_LINE_PREFIX: Final = "batch emulator endpoint: "


# --- AWS Batch status reasons (AWS's own text; see docs/architecture.md) -----------------------------------------


class StatusReason:
    """Prefixes of the ``statusReason`` values Batch reports, as the engine matches them."""

    TIMEOUT: Final = "Job attempt duration exceeded timeout"
    SPOT_RECLAIM_PREFIX: Final = "Host EC2"
    #: Fargate Spot's interruption: ECS's stoppedReason for a reclaimed FARGATE_SPOT task, which Batch reports as the
    #: job's statusReason (sources in docs/deploy.md, "Fargate Spot interruptions").
    FARGATE_SPOT_INTERRUPTED_PREFIX: Final = "Your Spot Task was interrupted"
    OVERRIDES_TOO_LONG: Final = "Container Overrides length must be at most 8192"
    ESSENTIAL_CONTAINER_EXITED: Final = "Essential container in task exited"


#: A task whose jobs lost this many Spot instances (counted over all its attempts) goes to the On-Demand queue next,
#: when the adapter has one (``--spot-reclaims-before-on-demand``).
SPOT_RECLAIMS_BEFORE_ON_DEMAND: Final = 2

#: Status-reason prefixes of a lost Spot capacity (EC2 Spot reclaim, Fargate Spot interruption): retried by the job
#: definition, and reported as "Spot retries exhausted" when every attempt ended this way.
SPOT_INTERRUPTION_PREFIXES: Final[tuple[str, ...]] = (
    StatusReason.SPOT_RECLAIM_PREFIX,
    StatusReason.FARGATE_SPOT_INTERRUPTED_PREFIX,
)

#: Batch's recommended retry rule set for Spot: retry a reclaimed host or an interrupted Fargate Spot task, exit on
#: anything else. Without the catch-all EXIT, Batch retries every failure (AWS's rule when no entry matches).
SPOT_RETRY_EVALUATE_ON_EXIT: Final[tuple[dict[str, str], ...]] = (
    *({"onStatusReason": f"{prefix}*", "action": "RETRY"} for prefix in SPOT_INTERRUPTION_PREFIXES),
    {"onReason": "*", "action": "EXIT"},
)


# --- job tags and names: a restarted adapter (and an operator) finds every job in AWS alone -----------------------


class JobTag:
    """Tag keys the adapter puts on every job. The stack's adapter policy lets it stop only jobs carrying
    ``ADAPTER_ID`` and tag jobs only with keys under ``PREFIX`` (plus the user tag keys the stack allows)."""

    PREFIX: Final = "scaler-batch:"
    ADAPTER_ID: Final = "scaler-batch:adapter-id"
    TASK_ID: Final = "scaler-batch:task-id"  # the first task of the job
    TASK_COUNT: Final = "scaler-batch:task-count"


#: AWS Batch accepts at most 50 tags on a resource, the adapter's own included.
MAX_JOB_TAGS: Final = 50
#: How many of those the adapter keeps for its own keys (``JobTag``; room for more to come).
ADAPTER_TAG_BUDGET: Final = 4

#: Every job name starts with ``<JOB_NAME_PREFIX>-<adapter id>-``; ListJobs finds an adapter's jobs by that prefix.
JOB_NAME_PREFIX: Final = "scaler"


def job_name_prefix(adapter_id: str) -> str:
    return f"{JOB_NAME_PREFIX}-{adapter_id}-"
