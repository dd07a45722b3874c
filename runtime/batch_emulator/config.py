"""Settings of the emulator: static configuration and mutable fault injection."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"


def _default_bin_dir() -> str:
    return os.path.dirname(sys.executable)


@dataclass
class EmulatorConfig:
    """Static settings, fixed when the emulator starts.

    Delays are the minimum time a job (or array child) spends in each state before it moves on. The defaults
    keep tests fast; a benchmark may set realistic values (AWS: seconds to minutes).
    """

    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    host: str = "127.0.0.1"
    port: int = 0
    """The public endpoint's port; 0 picks a free one."""
    delay_submitted: float = 0.05
    delay_pending: float = 0.05
    delay_runnable: float = 0.05
    delay_starting: float = 0.05
    max_running_jobs: int = 8
    """How many job processes may run at once; other jobs wait in RUNNABLE."""
    execution: Literal["process", "thread", "container"] = "process"
    """"process": every attempt is a local process. "thread": an attempt whose command is the project's runner
    (`scaler-batch run-job ...`) runs `scaler_aws_batch.runner.main(argv, env)` on a thread of this process, with the
    same environment variables and S3 calls, and no Python start-up per job; other commands stay processes. Kills
    cannot stop a thread (see `batch_emulator.inprocess`): test signals, timeouts and OOM with "process".
    "container": every attempt runs in the job definition's image with podman, as ECS starts it (see
    `batch_emulator.container`): what AWS would run, built from container/. Read when each attempt starts, so it may
    be changed while the emulator runs."""
    container_command: tuple[str, ...] = ("podman", "--runtime", "runc")
    """The container engine's command line before its verb (`run`, `kill`, ...), for "container" execution."""
    container_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    """PATH of the container engine's own process (the job's PATH is the image's)."""
    container_volumes: list[str] = field(default_factory=list)
    """TEST-ONLY knob: extra `host:container[:options]` bind mounts for every container, e.g. a test's temporary
    directory at the same path, where a test's task reads or writes files the test checks."""
    python_bin_dir: str = field(default_factory=_default_bin_dir)
    """Put first on the job processes' PATH, so that `scaler-batch` resolves to the venv's entry point."""
    time_scale: float = 1.0
    """TEST-ONLY knob: multiplies AWS's own durations (attemptDurationSeconds and the 30 s SIGTERM->SIGKILL grace).
    AWS rejects timeouts under 60 s, so a test sets e.g. time_scale=0.02 to make a 60 s timeout fire after 1.2 s."""
    timeout_override_seconds: float | None = None
    """TEST-ONLY knob: when set, replaces the effective attempt timeout of every job that has a timeout."""
    kill_grace_seconds: float | None = None
    """SIGTERM -> SIGKILL grace; None means AWS's 30 s multiplied by time_scale."""
    terminate_delay_seconds: float = 0.0
    """Delay before TerminateJob takes effect on a STARTING/RUNNING job (AWS: up to 30 s or more)."""
    tps_limits: dict[str, float] = field(default_factory=lambda: {"SubmitJob": 50.0})
    """Token-bucket rate per Batch operation name (e.g. {"SubmitJob": 50, "DescribeJobs": 20}); the bucket holds
    one second of tokens. Exceeding it answers HTTP 429 TooManyRequestsException, as AWS does."""
    log_flush_seconds: float = 0.5
    """How often a running job's output is pushed to CloudWatch Logs (it is always flushed before the job ends)."""
    inherit_environment: bool = True
    """Job processes inherit this process's environment (minus AWS_* variables) below the Batch variables."""
    work_dir: str | None = None
    """Working directory of job processes; None makes a temporary directory removed on close()."""
    reset_moto_on_start: bool = True
    """moto's state is process-global: reset it when the emulator starts and closes (one emulator at a time)."""


@dataclass(frozen=True)
class JobInfo:
    """What a success hook is told about the job attempt that just exited with code 0."""

    job_id: str
    job_name: str
    job_queue: str
    attempt: int
    array_index: int | None
    parameters: dict[str, str]
    command: list[str]
    environment: dict[str, str]


SuccessHook = Callable[[JobInfo, "S3Client"], None]


@dataclass
class Faults:
    """Fault injection, settable at any time while the emulator runs (`emu.faults.throttle_rate = 0.2`).

    Rates are probabilities per request, drawn from a seeded RNG (call `reseed()` to restart the sequence).
    Throttling and server errors apply to the Batch job APIs that the emulator serves itself
    (SubmitJob, DescribeJobs, ListJobs, CancelJob(s), TerminateJob(s), job tagging).
    """

    seed: int = 0
    throttle_rate: float = 0.0
    """Overall share of job-API requests answered 429 TooManyRequestsException."""
    throttle_rate_by_api: dict[str, float] = field(default_factory=dict)
    server_error_rate: float = 0.0
    """Overall share of job-API requests answered 500 ServerException."""
    server_error_rate_by_api: dict[str, float] = field(default_factory=dict)
    spot_reclaim_attempts: set[int] = field(default_factory=set)
    """Attempt numbers (1-based) whose host is reclaimed while the attempt runs."""
    spot_reclaim_job_name_glob: str | None = None
    """Restrict Spot reclaims to jobs whose name matches this fnmatch glob (None: every job)."""
    spot_reclaim_queue_glob: str | None = None
    """Restrict Spot reclaims to jobs on queues whose name matches this fnmatch glob (None: every queue), as only
    Spot compute environments lose hosts."""
    spot_reclaim_after_seconds: float = 0.0
    """How long the attempt runs before its host is reclaimed."""
    vanished_job_ids: set[str] = field(default_factory=set)
    """Job ids that DescribeJobs and ListJobs never return (again). Add ids at any time."""
    vanish_job_name_glob: str | None = None
    """Jobs submitted with a matching name (fnmatch) vanish: they run, but are never described."""
    vanish_rate: float = 0.0
    """Share of submitted jobs that vanish (drawn once per job at submit time)."""
    delete_on_success_globs: list[str] = field(default_factory=list)
    """`s3://bucket/key-glob` patterns: matching objects are deleted after a job attempt exits 0 and before the job
    is reported SUCCEEDED. The glob may use {job_id}, {job_name}, {array_index} and {attempt}."""
    lost_s3_put_globs: list[str] = field(default_factory=list)
    """`/bucket/key-glob` patterns (fnmatch, path-style): S3 PUTs to matching keys answer 200 and store nothing, a
    write lost before anyone can read it (unlike `delete_on_success_globs`, which races the readers)."""
    on_success_hooks: list[SuccessHook] = field(default_factory=list)
    """Callables run (with an S3 client) after a job attempt exits 0 and before it is reported SUCCEEDED."""
    s3_slow_down_rate: float = 0.0
    """Share of S3 requests (every client: the adapter's and the jobs') answered 503 SlowDown, as S3 does while it
    scales a prefix."""
    expired_access_keys: dict[str, float] = field(default_factory=dict)
    """Access key id -> `time.monotonic()` until which every request signed with it (Batch, S3, Logs, any service)
    is answered as if its credentials had expired. Set it with `expire_credentials`."""
    server_errors_until: float = 0.0
    """`time.monotonic()` until which every Batch job-API request is answered HTTP 500 (a burst). See
    `burst_server_errors`."""
    submit_delay_seconds: float = 0.0
    """SubmitJob requests wait this long (real seconds) before the job is created and answered. The job is created
    even if the client hung up meanwhile: a SubmitJob in flight when its caller dies lands later."""
    list_jobs_lag_seconds: float = 0.0
    """ListJobs leaves out jobs created less than this long ago (real seconds), as AWS's eventually consistent
    listing may; DescribeJobs still answers for them."""
    _rng: random.Random = field(default_factory=random.Random, repr=False, init=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, init=False, compare=False)

    def expire_credentials(self, access_key_id: str, seconds: float) -> None:
        """Requests signed with `access_key_id` fail with an expired-token error for the next `seconds`."""
        with self._lock:
            self.expired_access_keys[access_key_id] = time.monotonic() + seconds

    def credentials_expired(self, access_key_id: str) -> bool:
        with self._lock:
            until = self.expired_access_keys.get(access_key_id)
            return until is not None and time.monotonic() < until

    def burst_server_errors(self, seconds: float) -> None:
        """Every Batch job-API request answers HTTP 500 for the next `seconds`."""
        self.server_errors_until = time.monotonic() + seconds

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def reseed(self, seed: int | None = None) -> None:
        with self._lock:
            if seed is not None:
                self.seed = seed
            self._rng.seed(self.seed)

    def draw(self, probability: float) -> bool:
        """True with the given probability (seeded)."""
        if probability <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < probability


class ApiCalls(Counter[str]):
    """Counts of Batch API calls by operation name, as received (throttled and failed ones included).

    Extra attributes: `throttled` and `server_errors` (Counters by operation), `max_describe_ids` (largest number of
    ids seen in one DescribeJobs call) and `describe_ids_total`.
    """

    def __init__(self, *args: Any, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self.throttled: Counter[str] = Counter()
        self.server_errors: Counter[str] = Counter()
        self.credential_errors: Counter[str] = Counter()  # by service
        self.s3_slow_downs = 0
        self.max_describe_ids = 0
        self.describe_ids_total = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": dict(self),
            "throttled": dict(self.throttled),
            "server_errors": dict(self.server_errors),
            "credential_errors": dict(self.credential_errors),
            "s3_slow_downs": self.s3_slow_downs,
            "max_describe_ids": self.max_describe_ids,
            "describe_ids_total": self.describe_ids_total,
        }
