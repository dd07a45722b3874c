"""An embedded Scaler scheduler and object storage server, for the demo and the end-to-end tests.

These are Scaler's own processes (``scaler.cluster``), started on free loopback ports; only the worker side is ours.
"""

from __future__ import annotations

import dataclasses
import logging
from types import TracebackType

from scaler.cluster.object_storage_server import ObjectStorageServerProcess
from scaler.cluster.scheduler import SchedulerProcess
from scaler.config import defaults
from scaler.config.section.scheduler import PolicyConfig
from scaler.config.types.address import AddressConfig, SocketType
from scaler.utility.network_util import get_available_tcp_port

logger = logging.getLogger(__name__)


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
        self._scheduler_address = AddressConfig(SocketType.tcp, host, get_available_tcp_port())
        self._storage_address = AddressConfig(SocketType.tcp, host, get_available_tcp_port())
        self._logging_level = logging_level
        self._logging_paths = (log_path,)
        self._storage: ObjectStorageServerProcess | None = None
        self._scheduler: _PatchedSchedulerProcess | None = None

    @property
    def addresses(self) -> ClusterAddresses:
        return ClusterAddresses(repr(self._scheduler_address), repr(self._storage_address))

    def start(self) -> ClusterAddresses:
        self._storage = ObjectStorageServerProcess(
            bind_address=self._storage_address,
            identity="ObjectStorageServer",
            logging_paths=self._logging_paths,
            logging_level=self._logging_level,
            logging_config_file=None,
        )
        self._storage.start()
        self._storage.wait_until_ready()
        self._start_scheduler()
        logger.info("embedded scheduler on %s, object storage on %s", *dataclasses.astuple(self.addresses))
        return self.addresses

    def restart_scheduler(self) -> None:
        """Stop the scheduler and start a new one on the same address (the object storage keeps running)."""
        self._stop_process(self._scheduler)
        self._start_scheduler()

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
