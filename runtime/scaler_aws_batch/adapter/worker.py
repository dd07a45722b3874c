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
from scaler.io.mixins import AsyncConnector, ConnectorRemoteType
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

from scaler_aws_batch.adapter.task_manager import PassthroughTaskManager
from scaler_aws_batch.capabilities import TASK_CAPABILITIES, QueueRouting
from scaler_aws_batch.engine import JobEngine
from scaler_aws_batch.errors import StoreError
from scaler_aws_batch.lease import Lease
from scaler_aws_batch.limits import MAX_ARRAY_SIZE

logger = logging.getLogger(__name__)

_EXIT_NOTIFICATION_TIMEOUT_SECONDS = 5.0
_RECONNECT_MIN_SECONDS = 0.5
_RECONNECT_MAX_SECONDS = 30.0
#: The exit code when another adapter took this adapter's lease over (this one was cut off longer than its TTL).
EXIT_LEASE_LOST = 4
#: What the connectors raise when the scheduler is gone or unreachable.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ymq.YMQException, zmq.ZMQError, OSError)
#: ... and when it stopped answering (Scaler's death timeout).
_LOST_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_CONNECTION_ERRORS)


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
    #: Leave jobs running at exit, for a later adapter with the same id to re-attach (rolling restart).
    keep_jobs_on_exit: bool = False
    #: Bound on settling submissions and stopping every job at exit.
    shutdown_timeout_seconds: float = 60.0

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
    def __init__(
        self, settings: AdapterSettings, engine: JobEngine, *, lease: Lease | None = None, lease_seconds: float = 30.0
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._lease = lease
        self._lease_seconds = lease_seconds
        self._lease_lost = False
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
        """Serve until SIGINT/SIGTERM or a client's cluster shutdown; reconnect when the scheduler goes away.
        Returns a process exit code: non-zero when a job could not be stopped at shutdown."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._stopping.set)
        # Before taking any task: a task Scaler sends again must find its live job or stored result.
        renewing = asyncio.ensure_future(self._keep_lease())  # from now on: taking stock may outlast the lease's TTL
        await self._engine.take_stock()
        engine = asyncio.ensure_future(self._engine.run())
        delay = _RECONNECT_MIN_SECONDS
        try:
            while True:
                lost = await self._serve(on_ready)
                on_ready = None
                if not lost or self._stopping.is_set():
                    break
                # The scheduler went away (restart, network): keep every job for the grace period, reconnect.
                self._engine.detach_all()
                await self._task_manager.abandon_all()
                self._heartbeat_received, self._backlog = False, []
                logger.warning("adapter: lost the scheduler %s; reconnecting in %.1fs (jobs kept)",
                               self._settings.scheduler_address, delay)  # fmt: skip
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                if self._stopping.is_set():
                    break
                delay = min(delay * 2, _RECONNECT_MAX_SECONDS)
        finally:
            # Jobs of a lost lease belong to the adapter that took it over: leave them running.
            stop_jobs = not (self._settings.keep_jobs_on_exit or self._lease_lost)
            report = await self._engine.shutdown(
                stop_jobs=stop_jobs, timeout_seconds=self._settings.shutdown_timeout_seconds
            )
            for future in (engine, renewing):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
            await self._engine.close_usage()  # the usage summary line, and the usage log's last records
            await self._release_lease()
            self._engine.backend.close()
        if self._lease_lost:
            return EXIT_LEASE_LOST
        logger.info("adapter stopped after %d task(s); %d job(s) stopped, %d kept running, %d could not be stopped",
                    self._task_manager.completed, len(report.stopped), len(report.kept),
                    len(report.failed))  # fmt: skip
        return 1 if report.failed else 0

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its TTL until cancelled after shutdown (stopping jobs takes a while, and
        the id is still this adapter's meanwhile). When another adapter took it over (this one was paused or cut
        off longer than the TTL), stop serving at once: that adapter owns the jobs now."""
        assert self._stopping is not None
        if self._lease is None:
            return
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                held = await asyncio.to_thread(self._lease.renew)
            except StoreError as exc:  # an outage: try again at the next renewal
                logger.warning("adapter id %s: renewing its lease failed: %s", self._lease.adapter_id, exc)
                continue
            if not held:
                logger.error(
                    "adapter id %s: another adapter took its lease over (this one went unrenewed for %.0fs); "
                    "stopping, leaving the jobs to that adapter", self._lease.adapter_id, self._lease_seconds,
                )  # fmt: skip
                self._lease_lost = True
                self._stopping.set()
                return

    async def _release_lease(self) -> None:
        """At a clean exit, after the jobs were stopped or left: the next adapter with this id takes it at once."""
        if self._lease is None or self._lease_lost:
            return
        try:
            await asyncio.to_thread(self._lease.release)
        except StoreError as exc:  # the next adapter waits out the TTL instead
            logger.warning("adapter id %s: releasing its lease failed: %s", self._lease.adapter_id, exc)

    async def _serve(self, on_ready: Callable[[], None] | None) -> bool:
        """One connection to the scheduler. True when the scheduler was lost (reconnect), False to stop."""
        assert self._stopping is not None
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
        self._task_manager.reopen_intake()
        self._heartbeat = heartbeat
        loops: asyncio.Future[Any] | None = None
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        lost = False
        try:
            try:
                await external.connect(
                    AddressConfig.from_string(self._settings.scheduler_address), ConnectorRemoteType.Binder
                )
                if storage_address is not None:
                    await storage.connect(storage_address)
            except _CONNECTION_ERRORS as exc:
                if on_ready is not None:
                    raise  # the first connection: the caller reports it
                logger.warning("adapter: reconnecting to %s failed: %s", self._settings.scheduler_address, exc)
                return True
            logger.info("adapter %r connected to %s on backend %s, max %d concurrent jobs",
                        self._identity, self._settings.scheduler_address, self._engine.backend.name,
                        self._settings.max_concurrent_jobs)  # fmt: skip
            if on_ready is not None:
                on_ready()
            loops = asyncio.gather(
                create_async_loop_routine(external.routine, 0),
                create_async_loop_routine(storage.routine, 0),
                create_async_loop_routine(heartbeat.routine, self._settings.heartbeat_interval_seconds),
                create_async_loop_routine(timeouts.routine, 1),
                create_async_loop_routine(self._task_manager.routine, 0),
            )
            try:
                done, _ = await asyncio.wait([loops, stop], return_when=asyncio.FIRST_COMPLETED)
                if loops in done:
                    loops.result()
            except ClientShutdownException as exc:
                logger.info("adapter: %s", exc)
            except _LOST_ERRORS as exc:
                logger.warning("adapter: lost the scheduler: %s", exc or type(exc).__name__)
                lost = True
            if not lost:
                await self._leave(external)
            return lost
        finally:
            stop.cancel()
            if loops is not None:
                loops.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientShutdownException, TimeoutError,
                                         *_CONNECTION_ERRORS):  # fmt: skip
                    await loops
            external.destroy()
            storage.destroy()

    async def _leave(self, external: AsyncConnector) -> None:
        """Shutdown: take nothing more, tell the scheduler we leave (it re-routes our tasks), then the caller settles
        submissions and stops the jobs."""
        self._task_manager.close_intake()
        self._engine.close_intake()
        with contextlib.suppress(*_CONNECTION_ERRORS, asyncio.TimeoutError):  # it may be gone already
            await asyncio.wait_for(
                external.send(WorkerDisconnectNotification(), detached=False), _EXIT_NOTIFICATION_TIMEOUT_SECONDS
            )
        await self._task_manager.abandon_all()

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
