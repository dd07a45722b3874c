"""The adapter process: a Scaler worker whose "processors" are backend jobs.

It is assembled from Scaler 2.9's own parts (the network backend and connectors, the proxy
:class:`~scaler.worker_manager.proxy.heartbeat_manager.HeartbeatManager`, the worker timeout manager), with our
:class:`PassthroughTaskManager` in place of Scaler's, which would unpickle user data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import uuid
from collections.abc import Callable
from typing import Any

import zmq
from scaler.config.types.address import AddressConfig
from scaler.io import ymq
from scaler.io.mixins import ConnectorRemoteType
from scaler.io.network_backends import get_network_backend_from_env
from scaler.protocol.capnp import (
    BaseMessage,
    ClientDisconnect,
    ObjectInstruction,
    ProcessorStatus,
    Resource,
    Task,
    TaskCancel,
    WorkerDisconnectNotification,
    WorkerHeartbeatEcho,
)
from scaler.utility.event_loop import create_async_loop_routine
from scaler.utility.exceptions import ClientShutdownException
from scaler.utility.identifiers import WorkerID
from scaler.worker.agent.timeout_manager import VanillaTimeoutManager
from scaler.worker_manager.proxy.heartbeat_manager import HeartbeatManager
from scaler.worker_manager.proxy.mixins import ProcessorStatusProvider

from scaler_aws_batch.adapter.task_manager import TASK_CAPABILITIES, PassthroughTaskManager, QueueRouting
from scaler_aws_batch.engine import JobEngine
from scaler_aws_batch.limits import MAX_ARRAY_SIZE

logger = logging.getLogger(__name__)

_EXIT_NOTIFICATION_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class AdapterSettings:
    scheduler_address: str
    object_storage_address: str | None = None
    name: str = ""
    max_concurrent_jobs: int = MAX_ARRAY_SIZE
    task_queue_size: int = 0  # 0: twice the maximum of concurrent jobs, so arrays can fill up
    heartbeat_interval_seconds: int = 1
    death_timeout_seconds: int = 60
    io_threads: int = 2
    routing: QueueRouting = dataclasses.field(default_factory=QueueRouting)

    def __post_init__(self) -> None:
        if not self.scheduler_address.startswith(("tcp://", "ipc://", "inproc://", "ws://", "wss://")):
            raise ValueError(f"scheduler address must look like tcp://host:port, got {self.scheduler_address!r}")
        if self.max_concurrent_jobs <= 0:
            raise ValueError(f"--max-concurrent-jobs must be positive, got {self.max_concurrent_jobs}")
        if self.task_queue_size < 0:
            raise ValueError(f"--queue-size must be positive, got {self.task_queue_size}")


class _StatusProvider(ProcessorStatusProvider):  # type: ignore[misc]
    """Reports one virtual processor; busy while any job is in flight."""

    def __init__(self, task_manager: PassthroughTaskManager) -> None:
        self._task_manager = task_manager

    def set_task_manager(self, task_manager: object) -> None:
        del task_manager  # bound in the constructor

    def get_processor_statuses(self) -> list[ProcessorStatus]:
        busy = self._task_manager.processing_task_count > 0
        return [
            ProcessorStatus(pid=0, initialized=True, hasTask=busy, suspended=False, resource=Resource(cpu=0, rss=0))
        ]


class AdapterWorker:
    def __init__(self, settings: AdapterSettings, engine: JobEngine) -> None:
        self._settings = settings
        self._engine = engine
        name = settings.name or f"scaler-batch|{engine.backend.name}|{uuid.uuid4().hex[:8]}"
        self._identity = WorkerID.generate_worker_id(name)
        self._task_manager = PassthroughTaskManager(
            engine, max_concurrent_jobs=settings.max_concurrent_jobs, routing=settings.routing
        )
        self._heartbeat_received = False
        self._backlog: list[BaseMessage] = []
        self._stopping: asyncio.Event | None = None

    @property
    def task_manager(self) -> PassthroughTaskManager:
        return self._task_manager

    def capabilities(self) -> dict[str, int]:
        # -1 is Scaler's "unlimited": any task asking for these keys may be routed here.
        advertised = {key: -1 for key in TASK_CAPABILITIES}
        if self._settings.routing.gpu is None:
            del advertised["gpu"]
        if self._settings.routing.on_demand is None:
            del advertised["on_demand"]
        return advertised

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Serve until the scheduler goes away or SIGINT/SIGTERM. Returns a process exit code."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._stopping.set)

        network = get_network_backend_from_env(io_threads=self._settings.io_threads)
        external = network.create_async_connector(identity=self._identity, callback=self._on_message)
        storage = network.create_async_object_storage_connector(identity=self._identity)
        storage_address = (
            AddressConfig.from_string(self._settings.object_storage_address)
            if self._settings.object_storage_address
            else None
        )
        heartbeat = HeartbeatManager(
            object_storage_address=storage_address,
            capabilities=self.capabilities(),
            task_queue_size=self._settings.task_queue_size or 2 * self._settings.max_concurrent_jobs,
            worker_manager_id=b"scaler-aws-batch",
            processor_status_provider=_StatusProvider(self._task_manager),
        )
        timeouts = VanillaTimeoutManager(death_timeout_seconds=self._settings.death_timeout_seconds)
        heartbeat.register(
            connector_external=external,
            connector_storage=storage,
            worker_task_manager=self._task_manager,
            timeout_manager=timeouts,
        )
        self._task_manager.register(external, storage)
        self._heartbeat = heartbeat

        await external.connect(AddressConfig.from_string(self._settings.scheduler_address), ConnectorRemoteType.Binder)
        if storage_address is not None:
            await storage.connect(storage_address)
        logger.info("adapter %r connected to %s on backend %s, max %d concurrent jobs",
                    self._identity, self._settings.scheduler_address, self._engine.backend.name,
                    self._settings.max_concurrent_jobs)  # fmt: skip
        if on_ready is not None:
            on_ready()

        loops: asyncio.Future[Any] = asyncio.gather(
            create_async_loop_routine(external.routine, 0),
            create_async_loop_routine(storage.routine, 0),
            create_async_loop_routine(heartbeat.routine, self._settings.heartbeat_interval_seconds),
            create_async_loop_routine(timeouts.routine, 1),
            create_async_loop_routine(self._task_manager.routine, 0),
            self._engine.run(),
        )
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        exit_code = 0
        try:
            done, _ = await asyncio.wait([loops, stop], return_when=asyncio.FIRST_COMPLETED)
            if loops in done:
                loops.result()
        except ClientShutdownException as exc:
            logger.info("adapter: %s", exc)
        except TimeoutError as exc:
            logger.warning("adapter: lost the scheduler: %s", exc)
            exit_code = 1
        finally:
            await self._task_manager.cancel_all()
            with contextlib.suppress(ymq.YMQException, zmq.ZMQError, asyncio.TimeoutError, OSError):  # may be gone
                await asyncio.wait_for(
                    external.send(WorkerDisconnectNotification(), detached=False), _EXIT_NOTIFICATION_TIMEOUT_SECONDS
                )
            loops.cancel()
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientShutdownException, TimeoutError):
                await loops
            external.destroy()
            storage.destroy()
            await self._engine.close_usage()  # the usage summary line, and the usage log's last records
            self._engine.backend.close()
        logger.info("adapter stopped after %d task(s)", self._task_manager.completed)
        return exit_code

    async def _on_message(self, message: BaseMessage) -> None:
        # Scaler delivers nothing useful before the first heartbeat echo; keep messages until then, as it does.
        if isinstance(message, WorkerHeartbeatEcho):
            await self._heartbeat.on_heartbeat_echo(message)
            self._heartbeat_received = True
            backlog, self._backlog = self._backlog, []
            for queued in backlog:
                await self._on_message(queued)
            return
        if not self._heartbeat_received:
            self._backlog.append(message)
            return
        if isinstance(message, Task):
            await self._task_manager.on_task_new(message)
        elif isinstance(message, TaskCancel):
            await self._task_manager.on_cancel_task(message)
        elif isinstance(message, ObjectInstruction):
            await self._task_manager.on_object_instruction(message)
        elif isinstance(message, ClientDisconnect):
            if message.disconnectType == ClientDisconnect.DisconnectType.shutdown:
                raise ClientShutdownException("a client asked the cluster to shut down")
        else:
            logger.warning("adapter ignores unexpected message %s", type(message).__name__)
