"""``scaler-batch demo``: a sample workload through a real Scaler scheduler and the adapter.

With no arguments it starts an embedded scheduler and object storage, runs the adapter on the local backend with a
local directory store, then submits a ``map`` of a CPU-bound function, a command task and a task that raises. It
prints progress as results arrive and ends with a summary.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
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

ADAPTER_START_TIMEOUT_SECONDS = 60.0


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


@contextlib.contextmanager
def _adapter_process(scheduler: str, work_dir: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = work_dir / "adapter.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scaler_aws_batch", "worker", "--scheduler", scheduler, "--backend", "local",
             "--work-dir", str(work_dir), "--name", "demo-adapter"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def run_demo(*, scheduler: str | None, tasks: int, keep_work_dir: bool) -> int:
    from scaler import Client

    from scaler_aws_batch.commands import submit_command
    from scaler_aws_batch.embedded import EmbeddedScheduler

    if tasks <= 0:
        print("scaler-batch demo: --tasks must be positive", file=sys.stderr)
        return 2
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="scaler-batch-demo-"))
    started = time.monotonic()
    print("scaler-batch demo: the adapter on the local backend (each task runs as a local job process)")
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(EmbeddedScheduler(log_path=str(work_dir / "scheduler.log")))
            scheduler = cluster.addresses.scheduler
            print(f"  embedded Scaler scheduler at {scheduler}")
        else:
            print(f"  using the scheduler at {scheduler}")
        adapter = stack.enter_context(_adapter_process(scheduler, work_dir))
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
