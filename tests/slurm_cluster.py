"""A one-node Slurm cluster on this machine for the tests: munged, slurmctld and slurmd, all in a temporary directory.

``python tests/slurm_cluster.py DIR`` starts one and prints the ``SLURM_CONF`` to use (Ctrl-C stops it); the test
fixture does the same through :class:`SlurmCluster`. The daemons listen on free unprivileged local ports and keep
their state and logs under the directory, so several clusters (parallel test workers, two test runs) coexist on one
machine. The node declares at least :data:`NODE_CPUS` CPUs (test jobs mostly wait, so running many at once is what a
bigger cluster would do) and most of the machine's memory. There is no accounting daemon: ``sacct`` is unavailable,
as on many small clusters, and the backend does not need it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Final

from scaler_aws_batch.embedded import free_ports

#: What ``make test`` installs with apt-get when these are missing (see the Makefile).
REQUIRED_PROGRAMS: Final = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
NODE: Final = "node1"
PARTITIONS: Final = ("debug", "other")
#: The node's CPUs when the machine has fewer: Slurm then starts that many one-CPU jobs at once.
NODE_CPUS: Final = 16
#: Slurm's defaults delay scheduling by seconds per round (batch_sched_delay=3, sched_min_interval, the 60 s main
#: loop), which made 100 one-task array children take over two minutes on a 2-CPU node. Scheduling at once, and the
#: full queue every second, keeps a test cluster quick; it changes when jobs start, not what Slurm does with them.
SCHEDULER_PARAMETERS: Final = "batch_sched_delay=0,sched_min_interval=0,sched_interval=1,default_queue_depth=1000"


def which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"]))


def missing_programs() -> list[str]:
    return [name for name in REQUIRED_PROGRAMS if which(name) is None]


def _memory_mib() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class DaemonExitedError(RuntimeError):
    """A daemon stopped during start-up (its log says why)."""


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` holds ``SLURM_CONF`` for the Slurm commands."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._daemons: list[subprocess.Popen[bytes]] = []

    def _write_config(self) -> None:
        for name in ("state", "spool", "log", "munge"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        cpus = max(os.cpu_count() or 1, NODE_CPUS)
        # 90 % of the memory, so that slurmd never finds less than configured and drains the node.
        memory = _memory_mib() * 9 // 10
        user = os.environ.get("USER") or "root"
        controller_port, node_port = free_ports("127.0.0.1", 2)
        lines = [
            "ClusterName=scalertest",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",  # must be this host's short name
            "MailProg=/bin/true",
            f"SlurmctldPort={controller_port}",
            f"SlurmdPort={node_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in containers
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            f"SchedulerParameters={SCHEDULER_PARAMETERS}",
            "SlurmdParameters=config_overrides",  # the node's CPUs as configured here, not as counted by slurmd
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",  # memory is checked against the node, not reserved
            "ReturnToService=2",
            "KillWait=2",
            "MinJobAge=3600",  # finished jobs stay visible to squeue for the whole test session
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            *(
                f"PartitionName={name} Nodes={NODE} Default={'YES' if index == 0 else 'NO'} MaxTime=INFINITE State=UP"
                for index, name in enumerate(PARTITIONS)
            ),
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, argv: list[str], log_name: str) -> None:
        log = (self.root / "log" / log_name).open("ab")
        self._daemons.append(
            subprocess.Popen(
                [which(argv[0]) or argv[0], *argv[1:]], stdout=log, stderr=subprocess.STDOUT, env=self._environ()
            )
        )

    def start(self, timeout: float = 120.0, attempts: int = 3) -> None:
        missing = missing_programs()
        if missing:
            raise RuntimeError(f"Slurm is not installed (missing {', '.join(missing)}): run make slurm-install")
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except DaemonExitedError:
                # A free port picked for the config may be taken by another process before the daemon binds it
                # (other clusters, other test runs): new ports, new try.
                if attempt == attempts:
                    raise

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        munge = self.root / "munge"
        self._spawn(
            [
                "munged", "--foreground", "--force", f"--socket={munge / 'munge.socket'}",
                f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}", f"--log-file={munge / 'munged.log'}",
            ],
            "munged.out",
        )  # fmt: skip
        self._wait(lambda: (munge / "munge.socket").exists(), "munged's socket", timeout)
        self._spawn(["slurmctld", "-D", "-i"], "slurmctld.out")
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0, "slurmctld to answer", timeout)
        self._spawn(["slurmd", "-D", "-N", NODE], "slurmd.out")
        self._wait(self._node_ready, "the node to be idle", timeout)

    def _node_ready(self) -> bool:
        result = self.run("sinfo", "--noheader", "--nodes", NODE, "--format", "%t")
        return result.returncode == 0 and result.stdout.strip().splitlines()[:1] in (["idle"], ["mix"], ["alloc"])

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=self._environ(), timeout=60, check=False)

    @staticmethod
    def which(name: str) -> str:
        found = which(name)
        if found is None:
            raise RuntimeError(f"{name} is not installed")
        return found

    def _environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(daemon.poll() is not None for daemon in self._daemons):
                self.stop()
                raise DaemonExitedError(f"a Slurm daemon exited while waiting for {what}; logs in {self.root / 'log'}")
            if ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.root / 'log'}")

    def stop(self) -> None:
        if self._daemons:
            self.run("scancel", "--full", "--user", os.environ.get("USER") or "root")
        for daemon in reversed(self._daemons):  # slurmd, slurmctld, munged
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self._daemons.clear()


if __name__ == "__main__":
    cluster = SlurmCluster(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "slurm-test-cluster"))
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
