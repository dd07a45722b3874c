"""In-process execution: a job whose command is the project's runner (`scaler-batch run-job ...`) runs as a call
to `scaler_aws_batch.runner.main(argv, env)` on a thread of this process, instead of a new Python process.

The runner gets the same environment variables (passed per call, never through `os.environ`) and makes the same S3
calls over HTTP, so the adapter sees what it would see with processes, minus the cost of starting Python (about a
third of a CPU second per job). Any other command still runs as a process. What a thread cannot reproduce, tests
keep on processes: signals and kills (a kill here reports the attempt ended at once with the signal's exit code,
while the thread runs on and its outcome is dropped), timeouts that must stop the work, OOM kills, and crashes that
take the interpreter down.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence

from batch_emulator.config import EmulatorConfig
from batch_emulator.execution import ExitCallback, ProcessExecutor, job_environment
from batch_emulator.joblogs import JobLogs, LogSink
from batch_emulator.model import Attempt, Job

LOG = logging.getLogger("batch_emulator")

RUNNER_COMMAND = ("scaler-batch", "run-job")
RunnerMain = Callable[..., int]


def _runner_main() -> RunnerMain:
    from scaler_aws_batch import runner  # imported on first use: the emulator itself does not need the runtime

    return runner.main


def is_runner_command(argv: Sequence[str]) -> bool:
    return len(argv) >= 2 and os.path.basename(argv[0]) == RUNNER_COMMAND[0] and argv[1] == RUNNER_COMMAND[1]


class _SinkRouter(logging.Handler):
    """One handler for the runner's logger, shared by every job thread: each record goes to its thread's sink."""

    def __init__(self) -> None:
        super().__init__()
        self._sinks: dict[int, LogSink] = {}
        self._lock = threading.Lock()
        from scaler_aws_batch.runner import LOG_FORMAT

        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def bind(self, sink: LogSink | None) -> None:
        with self._lock:
            if sink is None:
                self._sinks.pop(threading.get_ident(), None)
            else:
                self._sinks[threading.get_ident()] = sink

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            sink = self._sinks.get(threading.get_ident())
        if sink is not None:
            sink.add(self.format(record))


class _Threaded:
    """Book-keeping of one attempt running on a thread."""

    def __init__(self) -> None:
        self.done = False  # the runner returned
        self.reported = False  # the exit went to the state machine (by the thread, or by a kill)


class ThreadExecutor:
    """Runs runner jobs on threads while `config.execution` is "thread"; everything else through `ProcessExecutor`."""

    def __init__(
        self,
        config: EmulatorConfig,
        job_env: dict[str, str],
        endpoint_url: Callable[[], str],
        logs: JobLogs,
        lock: threading.RLock,
        processes: ProcessExecutor,
        on_exit: ExitCallback,
    ) -> None:
        self._config = config
        self._job_env = job_env
        self._endpoint_url = endpoint_url
        self._logs = logs
        self._lock = lock
        self._processes = processes
        self._on_exit = on_exit
        self._threaded: dict[int, _Threaded] = {}  # id(attempt) -> state, while the attempt is current
        self._attempt_jobs: dict[int, Job] = {}
        self._runners: set[threading.Thread] = set()
        self._router: _SinkRouter | None = None

    def start(self, job: Job, attempt: Attempt) -> None:
        # Read at every start, so a test may switch modes while the emulator runs.
        if self._config.execution != "thread" or not is_runner_command(job.command):
            self._processes.start(job, attempt)
            return
        self._threaded[id(attempt)] = _Threaded()
        self._attempt_jobs[id(attempt)] = job
        runner = threading.Thread(target=self._run, args=(job, attempt), name=f"batch-job-{job.job_id}", daemon=True)
        self._runners.add(runner)
        runner.start()

    def alive(self, attempt: Attempt) -> bool:
        state = self._threaded.get(id(attempt))
        if state is None:
            return self._processes.alive(attempt)
        return not state.done and not state.reported

    def exited(self, attempt: Attempt) -> bool:
        state = self._threaded.get(id(attempt))
        if state is None:
            return self._processes.exited(attempt)
        return state.done

    def kill(self, attempt: Attempt, hard: bool) -> None:
        """A thread cannot be killed: report the attempt ended by the signal now and drop what the thread does."""
        state = self._threaded.get(id(attempt))
        if state is None:
            self._processes.kill(attempt, hard)
            return
        if state.reported or state.done:
            return
        state.reported = True
        job = self._job_of(attempt)
        if job is None:
            return
        returncode = -(signal.SIGKILL if hard else signal.SIGTERM)
        # Report from another thread: the state machine takes its lock, and the caller may hold it already.
        threading.Thread(
            target=self._report, args=(job, attempt, int(returncode), {}), name="batch-job-kill", daemon=True
        ).start()

    def close(self, attempts: list[Attempt]) -> None:
        self._processes.close(attempts)

    def join(self) -> None:
        self._processes.join()
        for runner in list(self._runners):
            runner.join(timeout=10)

    def _job_of(self, attempt: Attempt) -> Job | None:
        return self._attempt_jobs.get(id(attempt))

    def _report(self, job: Job, attempt: Attempt, returncode: int, env: dict[str, str]) -> None:
        self._threaded.pop(id(attempt), None)
        self._attempt_jobs.pop(id(attempt), None)
        self._on_exit(job, attempt, returncode, None, env)

    def _run(self, job: Job, attempt: Attempt) -> None:
        try:
            self._run_inner(job, attempt)
        finally:
            self._runners.discard(threading.current_thread())

    def _run_inner(self, job: Job, attempt: Attempt) -> None:
        with self._lock:
            env = job_environment(self._config, self._job_env, self._endpoint_url(), job, attempt)
            argv = list(job.command)
            state = self._threaded[id(attempt)]
        router = self._sink_router()
        sink = LogSink(self._logs, job.log_group, attempt.log_stream)
        sink.flush(final=False)  # the log stream exists once the container starts, as on AWS
        router.bind(sink)
        try:
            returncode = _call_runner(argv[2:], env, router)
        finally:
            router.bind(None)
        sink.flush()
        with self._lock:
            state.done = True
            if state.reported:
                return  # killed meanwhile: that outcome stands
            state.reported = True
        self._report(job, attempt, returncode, env)

    def _sink_router(self) -> _SinkRouter:
        with self._lock:
            if self._router is None:
                self._router = _SinkRouter()
            return self._router


def _call_runner(argv: list[str], env: Mapping[str, str], router: logging.Handler) -> int:
    try:
        return _runner_main()(argv, dict(env), log_handler=router)
    except SystemExit as exc:  # the runner returns its code; a stray sys.exit still ends only this job
        return exc.code if isinstance(exc.code, int) else 1
    except Exception:  # the job's crash is its exit code 1, as a process's would be; logged to the job's stream
        logging.getLogger("scaler_aws_batch.runner").exception("the runner crashed")
        return 1
