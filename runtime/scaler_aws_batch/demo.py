"""``scaler-batch demo``: a sample workload through a real Scaler scheduler and the adapter.

With no arguments it starts an embedded scheduler and object storage, runs the adapter on the local backend with a
local directory store, then submits a ``map`` of a CPU-bound function, a command task and a task that raises. It
prints progress as results arrive and ends with a summary.

``--backend aws-batch`` runs the same workload on the AWS Batch backend against the project's Batch emulator
(``python -m batch_emulator``, started as a separate process: AWS Batch, S3 and CloudWatch Logs on this machine,
each job a local process), so the AWS path can be tried with no AWS account.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from scaler_aws_batch.commands import CommandResult
from scaler_aws_batch.contracts import EMULATOR_ENDPOINT_LINE_PREFIX

ADAPTER_START_TIMEOUT_SECONDS = 60.0
EMULATOR_START_TIMEOUT_SECONDS = 120.0
DEMO_BACKENDS = ("local", "aws-batch")
#: What the emulator accepts as credentials; the adapter needs some to sign its requests.
_EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def count_primes(limit: int) -> int:
    """CPU-bound sample work: primes below ``limit`` by trial division."""
    count = 0
    for candidate in range(2, limit):
        if all(candidate % divisor for divisor in range(2, int(candidate**0.5) + 1)):
            count += 1
    return count


def fail_on_purpose(value: int) -> int:
    raise ValueError(f"boom: this task fails on purpose (input {value})")


@dataclasses.dataclass
class _Tally:
    total: int
    done: int = 0
    successes: int = 0
    failures: Counter[str] = dataclasses.field(default_factory=Counter)

    def record(self, label: str, future: concurrent.futures.Future[Any]) -> None:
        self.done += 1
        error = future.exception()
        if error is None:
            self.successes += 1
            value = future.result()
            if isinstance(value, CommandResult):
                shown = f"exit code {value.exit_code}, stdout {' | '.join(value.stdout.split(chr(10))).strip(' |')!r}"
            else:
                shown = repr(value)
            mark = "ok  "
        else:
            self.failures[type(error).__name__] += 1
            shown = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            mark = "FAIL"
        print(f"  [{self.done:>3}/{self.total}] {mark} {label} -> {shown[:100]}", flush=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _adapter_process(
    scheduler: str, work_dir: pathlib.Path, backend_args: list[str], env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = work_dir / "adapter.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scaler_aws_batch", "worker", "--scheduler", scheduler, "--name", "demo-adapter",
             *backend_args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
        try:
            yield process
        finally:
            _stop(process)


@contextlib.contextmanager
def _emulator_process(work_dir: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """``python -m batch_emulator`` on a free port; yields its endpoint and the stack outputs file it wrote."""
    outputs = work_dir / "cdk-outputs.json"
    log_path = work_dir / "emulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "batch_emulator", "--port", "0", "--outputs", str(outputs)],
            stdout=subprocess.PIPE, stderr=log, cwd=work_dir,
        )  # fmt: skip
        try:
            endpoint = _read_endpoint(process, log_path)
            yield endpoint, outputs
        finally:
            _stop(process)
            if process.stdout is not None:
                process.stdout.close()


def _read_endpoint(process: subprocess.Popen[bytes], log_path: pathlib.Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        if line.startswith(EMULATOR_ENDPOINT_LINE_PREFIX):
            return line[len(EMULATOR_ENDPOINT_LINE_PREFIX) :].strip()
        if not line and process.poll() is not None:
            break
    raise RuntimeError(f"the Batch emulator did not start; see {log_path}")


def run_demo(*, scheduler: str | None, tasks: int, keep_work_dir: bool, backend: str = "local") -> int:
    from scaler import Client

    from scaler_aws_batch.commands import submit_command
    from scaler_aws_batch.embedded import EmbeddedScheduler

    if tasks <= 0:
        print("scaler-batch demo: --tasks must be positive", file=sys.stderr)
        return 2
    if backend not in DEMO_BACKENDS:
        print(f"scaler-batch demo: --backend must be one of {', '.join(DEMO_BACKENDS)}", file=sys.stderr)
        return 2
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="scaler-batch-demo-"))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if backend == "local":
            print("scaler-batch demo: the adapter on the local backend (each task runs as a local job process)")
            backend_args = ["--backend", "local", "--work-dir", str(work_dir)]
        else:
            print("scaler-batch demo: the adapter on the AWS Batch backend, against the Batch emulator (no account)")
            if importlib.util.find_spec("moto") is None:
                print("  the Batch emulator needs moto: pip install 'scaler-aws-batch[emulator]'", file=sys.stderr)
                return 2
            try:
                endpoint, outputs = stack.enter_context(_emulator_process(work_dir))
            except RuntimeError as exc:
                print(f"  {exc}")
                return 1
            print(f"  Batch emulator at {endpoint}, stack outputs in {outputs}")
            backend_args = ["--backend", "aws-batch", "--stack-outputs", str(outputs), "--endpoint-url", endpoint]
            env = _EMULATOR_CREDENTIALS
        if scheduler is None:
            cluster = stack.enter_context(EmbeddedScheduler(log_path=str(work_dir / "scheduler.log")))
            scheduler = cluster.addresses.scheduler
            print(f"  embedded Scaler scheduler at {scheduler}")
        else:
            print(f"  using the scheduler at {scheduler}")
        adapter = stack.enter_context(_adapter_process(scheduler, work_dir, backend_args, env))
        print(f"  adapter pid {adapter.pid}, job logs and store under {work_dir}")
        client = stack.enter_context(Client(address=scheduler))
        limits = [20_000 + 2_500 * index for index in range(tasks)]
        total = len(limits) + 2
        tally = _Tally(total=total)
        print(f"  submitting {len(limits)} x count_primes, 1 command task, 1 task that raises ...")
        labelled: dict[concurrent.futures.Future[Any], str] = {}
        for limit, future in zip(limits, [client.submit(count_primes, limit) for limit in limits], strict=True):
            labelled[future] = f"count_primes({limit})"
        command = "echo hello from a command task; python3 -c 'import sys; print(sys.version.split()[0])'"
        labelled[submit_command(client, command)] = "command task"
        labelled[client.submit(fail_on_purpose, 7)] = "fail_on_purpose(7)"
        for future in concurrent.futures.as_completed(labelled, timeout=600):
            if adapter.poll() is not None:
                print(f"  the adapter exited with code {adapter.returncode}; see {work_dir / 'adapter.log'}")
                return 1
            tally.record(labelled[future], future)
    elapsed = time.monotonic() - started
    print()
    print("summary")
    print(f"  tasks       {tally.total}")
    print(f"  successes   {tally.successes}")
    failures = ", ".join(f"{name} x{count}" for name, count in sorted(tally.failures.items())) or "none"
    print(f"  failures    {sum(tally.failures.values())} ({failures})")
    print(f"  wall time   {elapsed:.1f}s on {os.cpu_count()} CPU(s)")
    expected = Counter({"ValueError": 1})
    if tally.successes == total - 1 and tally.failures == expected:
        print("  result      as expected: every task succeeded except the one that raises ValueError on purpose")
        code = 0
    else:
        print("  result      UNEXPECTED: see the lines above and", work_dir / "adapter.log")
        code = 1
    if keep_work_dir or code:
        print(f"  work dir    {work_dir} (kept)")
    else:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    return code
