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
from scaler.io.mixins import AsyncConnector, AsyncObjectStorageConnector, ConnectorRemoteType
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
from scaler.utility.exceptions import ClientShutdownException, ObjectStorageException
from scaler.utility.identifiers import WorkerID
from scaler.worker.agent.timeout_manager import VanillaTimeoutManager
from scaler.worker_manager.proxy.heartbeat_manager import HeartbeatManager
from scaler.worker_manager.proxy.mixins import ProcessorStatusProvider

from scaler_aws_batch import defaults
from scaler_aws_batch.adapter.lease_keeper import EXIT_LEASE_LOST, LeaseKeeper
from scaler_aws_batch.adapter.outage import Lost, OutageLog, probe
from scaler_aws_batch.adapter.task_manager import PassthroughTaskManager
from scaler_aws_batch.capabilities import TASK_CAPABILITIES, QueueRouting
from scaler_aws_batch.engine import JobEngine
from scaler_aws_batch.lease import Lease
from scaler_aws_batch.limits import MAX_ARRAY_SIZE

logger = logging.getLogger(__name__)

_EXIT_NOTIFICATION_TIMEOUT_SECONDS = 5.0
_RECONNECT_MIN_SECONDS = 0.5
_RECONNECT_MAX_SECONDS = 30.0
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
    #: How long kept jobs wait once the scheduler's process is known to have ended (it never re-sends their tasks).
    restart_grace_seconds: float = defaults.RESTART_GRACE_SECONDS

    def __post_init__(self) -> None:
        if not self.scheduler_address.startswith(("tcp://", "ipc://", "inproc://", "ws://", "wss://")):
            raise ValueError(f"scheduler address must look like tcp://host:port, got {self.scheduler_address!r}")
        if self.max_concurrent_jobs <= 0:
            raise ValueError(f"--max-concurrent-jobs must be positive, got {self.max_concurrent_jobs}")
        if self.task_queue_size < 0:
            raise ValueError(f"--queue-size must be positive, got {self.task_queue_size}")


def _closed_by_peer(exc: BaseException) -> bool:
    """Scaler's storage connector wraps YMQ's error: was the connection closed by the server's end?"""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ymq.ConnectorSocketClosedByRemoteEndError):
            return True
        cause = cause.__cause__
    return False


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
        self._name = settings.name or f"scaler-batch|{engine.backend.name}|{uuid.uuid4().hex[:8]}"
        self._identity = WorkerID.generate_worker_id(self._name)
        #: The object storage address: the setting, else the one the scheduler's first echo advertised.
        self._storage_address = (
            AddressConfig.from_string(settings.object_storage_address) if settings.object_storage_address else None
        )
        self._outage = OutageLog()
        self._lease = LeaseKeeper(lease, lease_seconds) if lease is not None else None
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
        # From now on: taking stock may outlast the lease's TTL.
        renewing = asyncio.ensure_future(self._lease.keep(self._stopping.set) if self._lease else asyncio.sleep(0))
        await self._engine.take_stock()
        engine = asyncio.ensure_future(self._engine.run())
        delay = _RECONNECT_MIN_SECONDS
        try:
            while True:
                ended = await self._serve(on_ready)
                on_ready = None
                if ended is None or self._stopping.is_set():
                    break
                if self._heartbeat_received:  # that session worked: a new outage, the backoff starts over
                    delay = _RECONNECT_MIN_SECONDS
                await self._lose(*ended)
                logger.info("adapter: reconnecting in %.1fs (jobs kept)", delay)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                if self._stopping.is_set():
                    break
                delay = min(delay * 2, _RECONNECT_MAX_SECONDS)
        finally:
            # Jobs of a lost lease belong to the adapter that took it over: leave them running.
            lease_lost = self._lease is not None and self._lease.lost
            stop_jobs = not (self._settings.keep_jobs_on_exit or lease_lost)
            report = await self._engine.shutdown(
                stop_jobs=stop_jobs, timeout_seconds=self._settings.shutdown_timeout_seconds
            )
            for future in (engine, renewing):
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
            await self._engine.close_usage()  # the usage summary line, and the usage log's last records
            if self._lease is not None:
                await self._lease.release()
            self._engine.backend.close()
        if self._lease is not None and self._lease.lost:
            return EXIT_LEASE_LOST
        logger.info("adapter stopped after %d task(s); %d job(s) stopped, %d kept running, %d could not be stopped",
                    self._task_manager.completed, len(report.stopped), len(report.kept),
                    len(report.failed))  # fmt: skip
        return 1 if report.failed else 0

    async def _lose(self, lost: Lost, cause: str) -> None:
        """The scheduler or the object storage went away (restart, network): keep every job for the re-attach grace,
        cut short when the scheduler's process ended (its tasks will never be sent again); report the outage."""
        self._engine.detach_all()
        await self._task_manager.abandon_all()
        self._heartbeat_received, self._backlog = False, []
        grace_flag = f"--reattach-grace {self._engine.settings.reattach_grace_seconds:g}s"
        address = repr(self._storage_address) if lost.storage else self._settings.scheduler_address
        if lost.ended:
            grace_flag = f"--restart-grace {self._settings.restart_grace_seconds:g}s"
            cut = self._engine.cut_grace(self._settings.restart_grace_seconds)
            if cut:
                logger.warning("adapter: %s at %s ended (%s): Scaler keeps tasks in memory, so %d task(s) of kept "
                               "jobs will never be sent again; their jobs are stopped in %gs (--restart-grace)",
                               "Scaler's object storage server" if lost.storage else "the scheduler", address,
                               cause.rstrip("."), cut, self._settings.restart_grace_seconds)  # fmt: skip
        self._outage.lost(lost, address, cause.rstrip("."), self._engine.kept(), grace_flag)

    async def _probe_peers(self) -> tuple[Lost, str] | None:
        """Before reconnecting: TCP probes of the scheduler and the object storage, so that a peer still down neither
        blocks the event loop in YMQ's connect retries nor hides a restart (refused: nothing listens there)."""
        scheduler = await probe(self._settings.scheduler_address)
        if not scheduler.reachable:
            return (Lost.SCHEDULER_ENDED if scheduler.refused else Lost.SCHEDULER), scheduler.detail
        if self._storage_address is not None:
            storage = await probe(repr(self._storage_address))
            if not storage.reachable:
                return (Lost.STORAGE_ENDED if storage.refused else Lost.STORAGE), storage.detail
        return None

    def _session_parts(
        self,
    ) -> tuple[AsyncConnector, AsyncObjectStorageConnector, HeartbeatManager, VanillaTimeoutManager]:
        """The connectors, heartbeat and timeout managers of one session, wired to the task manager."""
        # A fresh identity per session: a scheduler that still lives then times the old one out and sends its
        # tasks again (they re-attach), instead of believing the old identity still runs them.
        self._identity = WorkerID.generate_worker_id(self._name)
        network = get_network_backend_from_env(io_threads=self._settings.io_threads)
        external = network.create_async_connector(identity=self._identity, callback=self._on_message)
        storage = network.create_async_object_storage_connector(identity=self._identity)
        heartbeat = HeartbeatManager(
            object_storage_address=self._storage_address,
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
        return external, storage, heartbeat, timeouts

    async def _connect(
        self, external: AsyncConnector, storage: AsyncObjectStorageConnector, *, first: bool
    ) -> tuple[Lost, str] | None:
        """Connect to the scheduler, and to the object storage when its address is known (else on the first echo).
        What could not be reached, on a reconnection; the first connection's errors go to the caller."""
        try:
            await external.connect(
                AddressConfig.from_string(self._settings.scheduler_address), ConnectorRemoteType.Binder
            )
        except _CONNECTION_ERRORS as exc:
            if first:
                raise  # the caller reports it
            return Lost.SCHEDULER, f"connecting failed: {exc}"
        try:
            if self._storage_address is not None:
                await storage.connect(self._storage_address)
        except (ObjectStorageException, *_CONNECTION_ERRORS) as exc:
            if first:
                raise
            return Lost.STORAGE, f"connecting failed: {exc}"
        return None

    async def _serve(self, on_ready: Callable[[], None] | None) -> tuple[Lost, str] | None:
        """One session with the scheduler and the object storage: what was lost (reconnect), or None to stop."""
        assert self._stopping is not None
        if on_ready is None:
            unreachable = await self._probe_peers()
            if unreachable is not None:
                return unreachable
        external, storage, heartbeat, timeouts = self._session_parts()
        loops: asyncio.Future[Any] | None = None
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        lost: tuple[Lost, str] | None = None
        try:
            unreachable = await self._connect(external, storage, first=on_ready is not None)
            if unreachable is not None:
                return unreachable
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
            except ObjectStorageException as exc:
                lost = (Lost.STORAGE_ENDED if _closed_by_peer(exc) else Lost.STORAGE), str(exc)
            except ymq.ConnectorSocketClosedByRemoteEndError:
                lost = Lost.SCHEDULER_ENDED, "it closed the connection"
            except _LOST_ERRORS as exc:
                lost = Lost.SCHEDULER, str(exc) or f"{type(exc).__name__}: no answer"
            if lost is not None:
                logger.info("adapter: lost %s: %s", "Scaler's object storage" if lost[0].storage
                               else f"the scheduler {self._settings.scheduler_address}", lost[1])  # fmt: skip
            else:
                await self._leave(external)
            return lost
        finally:
            self._storage_address = heartbeat.get_object_storage_address() or self._storage_address
            stop.cancel()
            if loops is not None:
                loops.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientShutdownException, ObjectStorageException,
                                         TimeoutError, *_CONNECTION_ERRORS):  # fmt: skip
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
            try:  # its only I/O: connecting to the object storage the scheduler advertises, on the first echo
                await self._heartbeat.on_heartbeat_echo(message)
            except _CONNECTION_ERRORS as exc:
                raise ObjectStorageException(f"cannot connect to the object storage: {exc}") from exc
            if not self._heartbeat_received:
                self._outage.recovered()
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
