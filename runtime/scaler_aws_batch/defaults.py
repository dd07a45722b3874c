"""Defaults that the worker's settings (:mod:`scaler_aws_batch.worker_settings`) and the engine's
(:class:`scaler_aws_batch.engine.EngineSettings`) share, declared once."""

from __future__ import annotations

from typing import Final

JOB_TIMEOUT_SECONDS: Final = 3600
VANISH_BOUND_SECONDS: Final = 60.0
REATTACH_GRACE_SECONDS: Final = 180.0
#: After the scheduler's process ended (a restart): its tasks will never be sent again.
RESTART_GRACE_SECONDS: Final = 5.0
SUBMIT_DEADLINE_SECONDS: Final = 600.0
RUNNABLE_WARN_SECONDS: Final = 300.0
