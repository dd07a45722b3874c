"""Process execution: each running attempt is a local process in its own session, with the Batch environment.

One runner thread per attempt starts the process, pumps its output to the attempt's log stream and reports the exit
to the state machine through `on_exit`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from batch_emulator import rules
from batch_emulator.clock import Clock
from batch_emulator.config import EmulatorConfig
from batch_emulator.joblogs import JobLogs, LogSink
from batch_emulator.model import Attempt, Job
from batch_emulator.s3_requests import JOB_APP_ID

ExitCallback = Callable[[Job, Attempt, "int | None", "str | None", dict[str, str]], None]
"""(job, attempt, return code or None, start error or None, the attempt's environment)."""


def kill_grace(config: EmulatorConfig) -> float:
    """SIGTERM -> SIGKILL grace of a killed attempt."""
    if config.kill_grace_seconds is not None:
        return config.kill_grace_seconds
    return rules.AWS_KILL_GRACE_SECONDS * config.time_scale


def killpg(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def job_environment(
    config: EmulatorConfig, job_env: dict[str, str], endpoint_url: str, job: Job, attempt: Attempt
) -> dict[str, str]:
    """The environment of an attempt: inherited (optional), AWS endpoint, job definition, `job_env`, Batch ids."""
    env: dict[str, str] = {}
    if config.inherit_environment:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = config.python_bin_dir + os.pathsep + env.get("PATH", os.defpath)
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": config.region,
            "AWS_REGION": config.region,
            # SDKs add it to their User-Agent: the emulator tells the jobs' S3 requests from the adapter's.
            "AWS_SDK_UA_APP_ID": JOB_APP_ID,
        }
    )
    for item in job.environment:
        env[item["name"]] = item.get("value", "")
    env.update(job_env)
    env.update(
        {
            "AWS_BATCH_JOB_ID": job.job_id,
            "AWS_BATCH_JOB_ATTEMPT": str(attempt.number),
            "AWS_BATCH_JQ_NAME": job.queue_name,
            "AWS_BATCH_CE_NAME": job.ce_name,
        }
    )
    if job.array_index is not None:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.array_index)
    return env


class ProcessExecutor:
    """Runs attempts as process groups; kills them by signal."""

    def __init__(
        self,
        config: EmulatorConfig,
        job_env: dict[str, str],
        endpoint_url: Callable[[], str],
        logs: JobLogs,
        work_dir: str,
        lock: threading.RLock,
        clock: Clock,
        on_exit: ExitCallback,
    ) -> None:
        self._config = config
        self._job_env = job_env
        self._endpoint_url = endpoint_url
        self._logs = logs
        self._work_dir = work_dir
        self._lock = lock
        self._clock = clock
        self._on_exit = on_exit
        self._runners: set[threading.Thread] = set()
        self._stopping = False

    def start(self, job: Job, attempt: Attempt) -> None:
        """Start the attempt on its own runner thread (called with the lock held)."""
        runner = threading.Thread(target=self._run, args=(job, attempt), name=f"batch-job-{job.job_id}", daemon=True)
        self._runners.add(runner)
        runner.start()

    def alive(self, attempt: Attempt) -> bool:
        return attempt.proc is not None and attempt.proc.poll() is None

    def exited(self, attempt: Attempt) -> bool:
        """The attempt's process has exited on its own (its outcome stands)."""
        return attempt.proc is not None and attempt.proc.poll() is not None

    def kill(self, attempt: Attempt, hard: bool) -> None:
        """SIGKILL (hard) or SIGTERM then SIGKILL after the grace period. No-op before the process exists: the
        runner applies `attempt.kill_cause` as soon as it has started it."""
        proc = attempt.proc
        if proc is None:
            return
        if hard:
            killpg(proc, signal.SIGKILL)
            return
        killpg(proc, signal.SIGTERM)
        self._clock.schedule(kill_grace(self._config), lambda: killpg(proc, signal.SIGKILL))

    def close(self, attempts: list[Attempt]) -> None:
        with self._lock:
            self._stopping = True
            procs = [a.proc for a in attempts if a.proc is not None]
        for proc in procs:
            killpg(proc, signal.SIGKILL)

    def join(self) -> None:
        for runner in list(self._runners):
            runner.join(timeout=10)

    def _run(self, job: Job, attempt: Attempt) -> None:
        try:
            self._run_inner(job, attempt)
        finally:
            self._runners.discard(threading.current_thread())

    def _run_inner(self, job: Job, attempt: Attempt) -> None:
        with self._lock:
            env = job_environment(self._config, self._job_env, self._endpoint_url(), job, attempt)
            argv = list(job.command)
        sink = LogSink(self._logs, job.log_group, attempt.log_stream)
        start_error: str | None = None
        returncode: int | None = None
        executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if executable is None:
            start_error = f"CannotStartContainerError: executable not found: {argv[0] if argv else '(empty command)'}"
            sink.add(start_error)
        else:
            sink.flush(final=False)  # the log stream exists once the container starts, as on AWS
            try:
                proc = subprocess.Popen(
                    [executable, *argv[1:]],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._work_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                start_error = f"CannotStartContainerError: {exc}"
                sink.add(start_error)
            else:
                with self._lock:
                    attempt.proc = proc
                    pending = attempt.kill_cause
                    stopping = self._stopping
                if stopping or pending == "spot":
                    killpg(proc, signal.SIGKILL)
                elif pending is not None:
                    self.kill(attempt, hard=False)
                returncode = _pump(proc, sink, self._config.log_flush_seconds)
        sink.flush()
        self._on_exit(job, attempt, returncode, start_error, env)


def _pump(proc: subprocess.Popen[bytes], sink: LogSink, flush_every: float) -> int:
    """Copy the process output to the sink until it exits; then kill what is left of its process group."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    last_flush = time.monotonic()
    exited_at: float | None = None
    try:
        while True:
            if selector.select(timeout=0.1):
                data = os.read(fd, 65536)
                if not data:
                    break
                sink.feed(data)
            if time.monotonic() - last_flush >= flush_every:
                sink.flush(final=False)
                last_flush = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
                killpg(proc, signal.SIGKILL)  # the container's other processes die with it
            elif exited_at is not None and time.monotonic() - exited_at > 2.0:
                break  # a process that left the group still holds the pipe: stop reading
    finally:
        selector.close()
        proc.stdout.close()
    returncode = proc.wait()
    killpg(proc, signal.SIGKILL)
    return returncode
