"""Process execution: each running attempt is a local process in its own session, with the Batch environment, or
(execution "container") a container of the job definition's image (`batch_emulator.container`).

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
from typing import NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from batch_emulator import container, rules
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
    """The environment of an attempt: inherited (optional), AWS endpoint, job definition, `job_env`, Batch ids. A
    container inherits nothing from this host: its PATH and the rest are the image's."""
    env: dict[str, str] = {}
    if config.execution != "container":
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
        resolve_secret: container.SecretResolver,
    ) -> None:
        self._config = config
        self._resolve_secret = resolve_secret
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
            self._signal(attempt, proc, signal.SIGKILL)
            return
        self._signal(attempt, proc, signal.SIGTERM)

        def kill_after_grace() -> None:
            self._signal(attempt, proc, signal.SIGKILL)

        self._clock.schedule(kill_grace(self._config), kill_after_grace)

    def _signal(self, attempt: Attempt, proc: subprocess.Popen[bytes], sig: signal.Signals) -> threading.Thread | None:
        """Signal the attempt's process group, or its container (the engine's client process only relays); returns
        the thread that signals a container."""
        name = attempt.container
        if name is None:
            killpg(proc, sig)
            return None
        # `podman kill` takes a while and the caller may hold the job lock: signal from another thread.
        stopper = threading.Thread(
            target=container.stop, args=(self._config, name, sig.name.removeprefix("SIG")), daemon=True
        )
        stopper.start()
        return stopper

    def close(self, attempts: list[Attempt]) -> None:
        with self._lock:
            self._stopping = True
            running = [(a, a.proc) for a in attempts if a.proc is not None]
        stoppers = [self._signal(attempt, proc, signal.SIGKILL) for attempt, proc in running]
        for stopper in stoppers:
            if stopper is not None:  # no container outlives the emulator
                stopper.join(timeout=60)

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
        launch, start_error = self._launch(job, attempt, argv, env)
        if start_error is not None:
            sink.add(start_error)
        else:
            assert launch is not None
            sink.flush(final=False)  # the log stream exists once the container starts, as on AWS
            try:
                proc = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=launch.env,
                    cwd=self._work_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                start_error = f"CannotStartContainerError: {exc}"
                sink.add(start_error)
            else:
                with self._lock:
                    attempt.proc = proc
                    attempt.container = launch.name
                    pending = attempt.kill_cause
                    stopping = self._stopping
                if stopping or pending == "spot":
                    self._signal(attempt, proc, signal.SIGKILL)
                elif pending is not None:
                    self.kill(attempt, hard=False)
                returncode = _pump(proc, sink, self._config.log_flush_seconds)
                if launch.name is not None:
                    with self._lock:
                        if attempt.kill_cause is None and container.killed_by_memory_limit(returncode):
                            attempt.reason = container.OOM_REASON
        sink.flush()
        self._on_exit(job, attempt, returncode, start_error, env)

    def _launch(
        self, job: Job, attempt: Attempt, argv: list[str], env: dict[str, str]
    ) -> tuple[_Launch | None, str | None]:
        """What to start for the attempt, or the reason it cannot start (as the attempt's container reason)."""
        if self._config.execution == "container":
            try:
                started = container.container_launch(self._config, job, attempt, env, self._resolve_secret)
            except (ClientError, BotoCoreError) as exc:  # as ECS reports a secret it cannot read
                return None, f"ResourceInitializationError: unable to pull secrets: {exc}"
            except ValueError as exc:
                return None, f"CannotStartContainerError: {exc}"
            return _Launch(started.argv, started.env, started.name), None
        executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if executable is None:
            return None, f"CannotStartContainerError: executable not found: {argv[0] if argv else '(empty command)'}"
        return _Launch([executable, *argv[1:]], env, None), None


class _Launch(NamedTuple):
    argv: list[str]
    env: dict[str, str]
    name: str | None  # the container's, in container execution


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
