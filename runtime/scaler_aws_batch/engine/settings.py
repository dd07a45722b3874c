"""The engine's settings, each declared once with its default and checked at construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from scaler_aws_batch import defaults
from scaler_aws_batch.contracts import SPOT_RECLAIMS_BEFORE_ON_DEMAND
from scaler_aws_batch.limits import MAX_ARRAY_SIZE, MAX_CONTAINER_OVERRIDES_CHARS, OVERRIDES_SAFETY_MARGIN_CHARS
from scaler_aws_batch.tags import check_user_tags


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    adapter_id: str
    client_python: str
    cloudpickle_version: str
    job_timeout_seconds: int = defaults.JOB_TIMEOUT_SECONDS
    array_window_seconds: float = 0.05
    #: A steady stream of tasks keeps extending the window; the first task waits at most this long. While the
    #: stream lasts (every group is cut at this bound) the bound doubles, up to ``array_max_wait_cap_seconds``: a
    #: large map becomes a few large arrays (SubmitJob calls stay nearly flat) instead of one array per 2 s.
    array_max_wait_seconds: float = 2.0
    array_max_wait_cap_seconds: float = 10.0
    max_array_size: int = MAX_ARRAY_SIZE
    poll_interval_min_seconds: float = 0.05
    poll_interval_max_seconds: float = 2.0
    #: Describe calls back off from poll_interval_min_seconds to this while results arrive through store listings.
    describe_interval_max_seconds: float = 10.0
    vanish_bound_seconds: float = defaults.VANISH_BOUND_SECONDS
    store_threshold_bytes: int = 2048
    overrides_budget_chars: int = MAX_CONTAINER_OVERRIDES_CHARS - OVERRIDES_SAFETY_MARGIN_CHARS
    log_tail_lines: int = 20
    delete_results: bool = True
    #: A result read is deleted this long after it was handed over, not at once: an adapter killed in between leaves
    #: it in the store, and the next adapter delivers it when Scaler sends the task again instead of running it.
    result_delete_delay_seconds: float = 1.0
    #: How long a job found at start (or kept over a scheduler restart) waits for Scaler to send its task again
    #: before it is stopped. Longer than the scheduler's worker timeout (Scaler: 60 s), which delays the re-send.
    reattach_grace_seconds: float = defaults.REATTACH_GRACE_SECONDS
    #: How long a submission keeps being retried through throttling, server errors and expired credentials.
    submit_deadline_seconds: float = defaults.SUBMIT_DEADLINE_SECONDS
    #: Set when this adapter took its id over from a dead adapter whose last SubmitJob may still land (bounded by
    #: the client's read timeout plus ListJobs' lag): tasks sent again that found neither a live job nor a stored
    #: result wait until this long after taking stock, when the engine looks for the adapter's jobs once more.
    #: 0: no second look (a clean first start, a released lease).
    second_look_after_seconds: float = 0.0
    #: Queues searched for this adapter's jobs at start (None: the backend's default queue).
    queues: tuple[str | None, ...] = (None,)
    #: Re-upload content-addressed objects older than this; keep it well under the bucket's expiry (>= 1 day).
    reupload_after_seconds: float = 6 * 3600
    #: Where a task goes after ``spot_reclaims_before_on_demand`` Spot reclaims (None: it fails instead).
    on_demand_queue: str | None = None
    spot_reclaims_before_on_demand: int = SPOT_RECLAIMS_BEFORE_ON_DEMAND
    #: A job waiting in RUNNABLE longer than this is logged once, with the queue's state and a diagnosis.
    runnable_warn_seconds: float = defaults.RUNNABLE_WARN_SECONDS
    #: User tags on every job (``cdk.json`` ``job_tags`` and ``--tag``), checked by :mod:`scaler_aws_batch.tags`.
    user_tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.max_array_size <= MAX_ARRAY_SIZE:
            raise ValueError(f"max_array_size must be within 1..{MAX_ARRAY_SIZE}, got {self.max_array_size}")
        if self.array_max_wait_cap_seconds < self.array_max_wait_seconds:
            raise ValueError("the array max wait cap must be at least the array max wait")
        if self.poll_interval_min_seconds <= 0 or self.poll_interval_max_seconds < self.poll_interval_min_seconds:
            raise ValueError("poll intervals must be positive, with min <= max")
        if self.describe_interval_max_seconds < self.poll_interval_min_seconds:
            raise ValueError("the describe interval must be at least the shortest poll interval")
        if self.job_timeout_seconds <= 0:
            raise ValueError(f"job timeout must be positive, got {self.job_timeout_seconds}")
        if self.vanish_bound_seconds <= 0 or self.reattach_grace_seconds < 0 or self.submit_deadline_seconds < 0:
            raise ValueError("the vanish bound must be positive; the re-attach grace and submit deadline not negative")
        if self.spot_reclaims_before_on_demand < 1:
            raise ValueError(
                f"--spot-reclaims-before-on-demand must be at least 1, got {self.spot_reclaims_before_on_demand}"
            )
        if self.runnable_warn_seconds <= 0:
            raise ValueError(f"--runnable-warn-after must be positive, got {self.runnable_warn_seconds}")
        if not self.adapter_id or not self.adapter_id.replace("-", "").isalnum() or len(self.adapter_id) > 40:
            raise ValueError(f"the adapter id must be 1-40 letters, digits or '-', got {self.adapter_id!r}")
        check_user_tags(self.user_tags, source="job tags")
