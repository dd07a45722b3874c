"""The Batch emulator in a process of its own, driven from the bench's process.

The bench's client, the emulator (with moto and, in thread execution, every job's runner) and the measured adapter
would otherwise share one interpreter lock: the client then submits in bursts of a few tasks, which measures the
emulator, not the adapter. On AWS the jobs, S3 and Batch run elsewhere; here they run in this child process, and the
bench reads the emulator's counters and sets its faults through a ``multiprocessing`` manager.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.managers import BaseManager
from types import TracebackType
from typing import Any, cast

from batch_emulator import BatchEmulator, EmulatorConfig
from batch_emulator.standalone import create_signing_secret


class EmulatorControl:
    """Lives in the emulator's process: the few things the bench asks of the emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._emulator = BatchEmulator(config).start()

    def endpoint(self) -> tuple[str, str, int]:
        """(endpoint URL, region, the emulator's process id)."""
        return self._emulator.endpoint_url, self._emulator.region, os.getpid()

    def counters(self) -> dict[str, Any]:
        """Batch calls by operation, throttled calls, the largest DescribeJobs, and S3 requests by requester."""
        return {"batch": self._emulator.api_calls.snapshot(), "s3": self._emulator.s3_requests.snapshot()}

    def reset_counters(self) -> None:
        self._emulator.reset_api_calls()

    def job_status_counts(self) -> dict[str, int]:
        return self._emulator.job_status_counts()

    def set_throttle_rate(self, rate: float) -> None:
        self._emulator.faults.throttle_rate = rate

    def create_queue_and_job_definition(self, **kwargs: Any) -> tuple[str, str]:
        return self._emulator.create_queue_and_job_definition(**kwargs)

    def create_bucket(self, name: str) -> None:
        self._emulator.client("s3").create_bucket(Bucket=name)

    def create_signing_secret(self, name: str) -> str:
        """The secret's ARN (the key never leaves the emulator's process)."""
        arn, _ = create_signing_secret(self._emulator, name)
        return arn

    def close(self) -> None:
        self._emulator.close()


class _Manager(BaseManager):
    pass


_Manager.register("EmulatorControl", EmulatorControl)


class EmulatorProcess:
    """A started emulator in a spawned child process; use as a context manager."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._manager = _Manager(ctx=multiprocessing.get_context("spawn"))
        self._control: EmulatorControl | None = None
        self.endpoint_url = ""
        self.region = ""
        self.pid = 0

    def __enter__(self) -> EmulatorProcess:
        self._manager.start()
        try:
            self._control = cast(EmulatorControl, self._manager.EmulatorControl(self._config))  # type: ignore[attr-defined]
            self.endpoint_url, self.region, self.pid = self._control.endpoint()
        except BaseException:
            self._manager.shutdown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._control is not None:
                self._control.close()
        finally:
            self._manager.shutdown()

    @property
    def control(self) -> EmulatorControl:
        if self._control is None:
            raise RuntimeError("the emulator process is not started")
        return self._control
