"""An embedded Scaler scheduler and object storage server, for the demo and the end-to-end tests.

These are Scaler's own processes (``scaler.cluster``), started on free loopback ports; only the worker side is ours.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import pathlib
import random
import socket
from types import TracebackType

from scaler.cluster.object_storage_server import ObjectStorageServerProcess
from scaler.cluster.scheduler import SchedulerProcess
from scaler.config import defaults
from scaler.config.section.scheduler import PolicyConfig
from scaler.config.types.address import AddressConfig, SocketType
from scaler.utility.network_util import get_available_tcp_port

logger = logging.getLogger(__name__)

#: Where to pick ports when the kernel's ephemeral range lies above it (Linux: 32768-60999 by default).
_PORT_FLOOR = 10_000


def _ephemeral_range() -> tuple[int, int] | None:
    try:
        low, high = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return None
    return int(low), int(high)


def _binds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` now, each with the port two above it free too.

    Scaler's processes bind their ports a moment after this returns, and its scheduler also binds its monitor socket
    on its port + 2, unchecked. A port from the kernel's ephemeral range may meanwhile go to any outgoing connection on
    the machine (many, when tests run in parallel), so the ports are random ones below that range when there is room.
    """
    ephemeral = _ephemeral_range()
    if ephemeral is None or ephemeral[0] - _PORT_FLOOR < 1000:
        return [get_available_tcp_port(host) for _ in range(count)]
    chooser = random.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = chooser.randrange(_PORT_FLOOR, ephemeral[0] - 2)
        if all(abs(port - other) > 2 for other in chosen) and _binds(host, port) and _binds(host, port + 2):
            chosen.append(port)
    return chosen


@dataclasses.dataclass(frozen=True)
class ClusterAddresses:
    scheduler: str
    object_storage: str


class _PatchedSchedulerProcess(SchedulerProcess):  # type: ignore[misc]
    """Scaler's scheduler process with the capability-forwarding fix (see :mod:`scaler_aws_batch.scaler_compat`)."""

    def run(self) -> None:
        from scaler_aws_batch.scaler_compat import patch_task_capability_forwarding

        patch_task_capability_forwarding()
        super().run()


class EmbeddedScheduler:
    """``with EmbeddedScheduler() as cluster: Client(cluster.addresses.scheduler)``."""

    def __init__(
        self,
        *,
        logging_level: str = "WARNING",
        log_path: str = "/dev/stderr",
        host: str = "127.0.0.1",
        worker_timeout_seconds: int = defaults.DEFAULT_WORKER_TIMEOUT_SECONDS,
    ) -> None:
        self._worker_timeout_seconds = worker_timeout_seconds
        scheduler_port, storage_port = free_ports(host, 2)
        self._scheduler_address = AddressConfig(SocketType.tcp, host, scheduler_port)
        self._storage_address = AddressConfig(SocketType.tcp, host, storage_port)
        self._logging_level = logging_level
        self._logging_paths = (log_path,)
        self._storage: ObjectStorageServerProcess | None = None
        self._scheduler: _PatchedSchedulerProcess | None = None

    @property
    def addresses(self) -> ClusterAddresses:
        return ClusterAddresses(repr(self._scheduler_address), repr(self._storage_address))

    def start(self) -> ClusterAddresses:
        self.start_object_storage()
        self._start_scheduler()
        logger.info("embedded scheduler on %s, object storage on %s", *dataclasses.astuple(self.addresses))
        return self.addresses

    def restart_scheduler(self) -> None:
        """Stop the scheduler and start a new one on the same address (the object storage keeps running)."""
        self._stop_process(self._scheduler)
        self._start_scheduler()

    def start_object_storage(self) -> None:
        """Start the object storage server on its address (again, after :meth:`kill`)."""
        self._storage = ObjectStorageServerProcess(
            bind_address=self._storage_address,
            identity="ObjectStorageServer",
            logging_paths=self._logging_paths,
            logging_level=self._logging_level,
            logging_config_file=None,
        )
        self._storage.start()
        self._storage.wait_until_ready()

    def start_scheduler(self) -> None:
        """Start the scheduler on its address (again, after :meth:`kill` or :meth:`stop_scheduler`)."""
        self._start_scheduler()

    def stop_scheduler(self) -> None:
        """SIGTERM to the scheduler (SIGKILL if it does not exit)."""
        self._stop_process(self._scheduler)

    def kill(self, which: str) -> None:
        """``kill -9`` of ``"scheduler"`` or ``"object_storage"`` (a fault for the tests)."""
        process = self._scheduler if which == "scheduler" else self._storage
        if process is not None and process.is_alive():
            process.kill()
            process.join()

    def _start_scheduler(self) -> None:
        self._scheduler = _PatchedSchedulerProcess(
            bind_address=self._scheduler_address,
            object_storage_address=self._storage_address,
            advertised_object_storage_address=None,
            monitor_address=None,
            io_threads=defaults.DEFAULT_IO_THREADS,
            max_number_of_tasks_waiting=defaults.DEFAULT_MAX_NUMBER_OF_TASKS_WAITING,
            client_timeout_seconds=defaults.DEFAULT_CLIENT_TIMEOUT_SECONDS,
            worker_timeout_seconds=self._worker_timeout_seconds,
            object_retention_seconds=defaults.DEFAULT_OBJECT_RETENTION_SECONDS,
            load_balance_seconds=defaults.DEFAULT_LOAD_BALANCE_SECONDS,
            load_balance_trigger_times=defaults.DEFAULT_LOAD_BALANCE_TRIGGER_TIMES,
            protected=False,
            policy=PolicyConfig(),
            event_loop="builtin",
            logging_paths=self._logging_paths,
            logging_config_file=None,
            logging_level=self._logging_level,
        )
        self._scheduler.start()

    def stop(self) -> None:
        for process in (self._scheduler, self._storage):  # the scheduler goes first, as Scaler's combo does
            self._stop_process(process)

    @staticmethod
    def _stop_process(process: SchedulerProcess | ObjectStorageServerProcess | None) -> None:
        if process is not None and process.is_alive():
            process.terminate()
            process.join(timeout=15)
            if process.is_alive():
                process.kill()
                process.join()

    def __enter__(self) -> EmbeddedScheduler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
