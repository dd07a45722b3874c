"""A Scaler task manager that passes the client's bytes through, never unpickling them.

Scaler's own ``scaler.worker_manager.proxy.task_manager.TaskManager`` deserializes the serializer, the function and
the arguments, and re-serializes results; this one fetches the raw bytes from Scaler's object storage, hands them
to the :class:`~scaler_aws_batch.engine.JobEngine`, and stores the runner's result bytes back untouched.

It honours task priority (a heap, highest first), a maximum number of concurrent jobs, and cancel of both queued
and running tasks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import pickle
import time
from typing import TYPE_CHECKING, Any

from scaler.protocol.capnp import (
    ObjectInstruction,
    ObjectMetadata,
    Task,
    TaskCancel,
    TaskCancelConfirm,
    TaskCancelConfirmType,
    TaskResult,
    TaskResultType,
)
from scaler.protocol.helpers import capabilities_to_dict
from scaler.utility.exceptions import ObjectStorageException
from scaler.utility.identifiers import ObjectID, TaskID
from scaler.utility.metadata.task_flags import retrieve_task_flags_from_task
from scaler.worker.agent.mixins import TaskManager as TaskManagerMixin

from scaler_aws_batch.capabilities import (
    LOST_CAPABILITIES_HINT,
    TASK_CAPABILITIES,
    QueueRouting,
    check_capacity,
    parse_capabilities,
)
from scaler_aws_batch.engine import JobEngine, TaskOutcome, TaskWork
from scaler_aws_batch.errors import CapabilitiesLostError, CapabilityError
from scaler_aws_batch.wire import TaskBlobs

if TYPE_CHECKING:
    from scaler.io.mixins import AsyncConnector, AsyncObjectStorageConnector

logger = logging.getLogger(__name__)

__all__ = ["TASK_CAPABILITIES", "PassthroughTaskManager", "QueueRouting"]


class PassthroughTaskManager(TaskManagerMixin):  # type: ignore[misc]
    def __init__(self, engine: JobEngine, *, max_concurrent_jobs: int, routing: QueueRouting) -> None:
        if max_concurrent_jobs <= 0:
            raise ValueError(f"max concurrent jobs must be positive, got {max_concurrent_jobs}")
        self._engine = engine
        self._max_concurrent = max_concurrent_jobs
        self._routing = routing
        self._queue: list[tuple[int, int, bytes]] = []  # (-priority, arrival, task id): a stable priority heap
        self._arrival = itertools.count()
        self._queued: dict[bytes, Task] = {}
        self._running: dict[bytes, asyncio.Task[None]] = {}
        self._serializers: dict[bytes, bytes] = {}  # serializer object id -> the client's serializer bytes
        self._wake = asyncio.Event()
        self._connector_external: AsyncConnector | None = None
        self._connector_storage: AsyncObjectStorageConnector | None = None
        self._intake_open = True
        self._warned_lost_capabilities = False
        #: Set when a read or write of Scaler's object storage lost the connection: :meth:`routine` raises it, so
        #: the adapter treats it like a lost scheduler (reconnect, jobs kept) instead of failing tasks.
        self._storage_lost: ObjectStorageException | None = None
        self.completed = 0

    def register(self, connector_external: AsyncConnector, connector_storage: AsyncObjectStorageConnector) -> None:
        self._connector_external = connector_external
        self._connector_storage = connector_storage

    # --- what Scaler's heartbeat manager asks --------------------------------------------------------------------

    def get_queued_size(self) -> int:
        return len(self._queued)

    def can_accept_task(self) -> bool:
        return len(self._running) < self._max_concurrent

    @property
    def processing_task_count(self) -> int:
        return len(self._running)

    # --- messages from the scheduler -----------------------------------------------------------------------------

    async def on_task_new(self, task: Task) -> None:
        if not self._intake_open:  # shutting down: the scheduler re-routes the task once we have left
            logger.info("task %s: not taken, the adapter is shutting down", bytes(task.taskId).hex())
            return
        priority = retrieve_task_flags_from_task(task).priority
        heapq.heappush(self._queue, (-priority, next(self._arrival), bytes(task.taskId)))
        self._queued[bytes(task.taskId)] = task
        logger.debug("task %s: queued with priority %d", bytes(task.taskId).hex(), priority)
        self._wake.set()

    async def on_task_result(self, result: TaskResult) -> None:
        raise NotImplementedError("the adapter produces results; it never receives them")

    async def on_cancel_task(self, task_cancel: TaskCancel) -> None:
        task_id = bytes(task_cancel.taskId)
        confirm = TaskCancelConfirmType.cancelNotFound
        if task_id in self._queued:
            del self._queued[task_id]  # its heap entry is skipped when popped
            confirm = TaskCancelConfirmType.canceled
        elif task_id in self._running:
            if not task_cancel.flags.force:
                confirm = TaskCancelConfirmType.cancelFailed
            else:
                await self._engine.cancel(task_id.hex())
                self._running.pop(task_id).cancel()
                confirm = TaskCancelConfirmType.canceled
        logger.info("task %s: cancel -> %s", task_id.hex(), confirm.name if hasattr(confirm, "name") else confirm)
        await self._send(TaskCancelConfirm(taskId=task_cancel.taskId, cancelConfirmType=confirm))
        self._wake.set()

    async def on_object_instruction(self, instruction: ObjectInstruction) -> None:
        if instruction.instructionType == ObjectInstruction.ObjectInstructionType.delete:
            for object_id in instruction.objectMetadata.objectIds:
                self._serializers.pop(bytes(object_id), None)

    # --- the dispatch loop ---------------------------------------------------------------------------------------

    async def routine(self) -> None:
        """Start queued tasks, highest priority first, while fewer than the maximum are running. Raises
        ``ObjectStorageException`` once a task lost the connection to Scaler's object storage."""
        if self._storage_lost is not None:
            lost, self._storage_lost = self._storage_lost, None
            raise lost
        while self._queue and self.can_accept_task() and self._intake_open:
            _, _, task_id = heapq.heappop(self._queue)
            task = self._queued.pop(task_id, None)
            if task is None:
                continue  # cancelled while queued
            runner = asyncio.create_task(self._run(task), name=f"task-{task_id.hex()[:12]}")
            runner.add_done_callback(self._report_crash)
            self._running[task_id] = runner
        self._wake.clear()
        await self._wake.wait()

    @staticmethod
    def _report_crash(runner: asyncio.Task[None]) -> None:
        """A bug in the adapter must not lose a task silently: log it with the task's name for operators."""
        if not runner.cancelled() and runner.exception() is not None:
            logger.error("%s crashed; its result was not sent", runner.get_name(), exc_info=runner.exception())

    async def _load_blobs(self, task: Task) -> TaskBlobs:
        assert self._connector_storage is not None
        serializer_id = ObjectID.generate_serializer_object_id(task.source)
        serializer = self._serializers.get(bytes(serializer_id))
        if serializer is None:
            serializer = bytes(await self._connector_storage.get_object(serializer_id))
            self._serializers[bytes(serializer_id)] = serializer
        object_ids = [ObjectID(task.funcObjectId), *(ObjectID(argument.data) for argument in task.functionArgs)]
        function, *arguments = await asyncio.gather(*(self._connector_storage.get_object(oid) for oid in object_ids))
        return TaskBlobs(
            task_id=bytes(task.taskId).hex(),
            serializer=serializer,
            function=bytes(function),
            arguments=tuple(bytes(argument) for argument in arguments),
        )

    async def _run(self, task: Task) -> None:
        task_id = bytes(task.taskId)
        started = time.monotonic()
        try:
            try:
                logger.debug("task %s capabilities %s", task_id.hex(), capabilities_to_dict(task.capabilities))
                backend = self._engine.backend
                request = parse_capabilities(
                    capabilities_to_dict(task.capabilities), self._routing,
                    min_timeout_seconds=backend.min_timeout_seconds,
                )  # fmt: skip
                capacity = await asyncio.to_thread(backend.capacity, request.queue)
                check_capacity(request, capacity, request.queue or backend.default_queue_name)
            except CapabilityError as exc:
                if isinstance(exc, CapabilitiesLostError):
                    self._warn_lost_capabilities()
                    logger.info("task %s: refused: its capabilities were lost by the scheduler", task_id.hex())
                else:
                    logger.warning("task %s: refused: %s", task_id.hex(), exc)
                outcome = TaskOutcome(False, pickle.dumps(exc))
            else:
                # Scaler 2.9's storage connector raises ObjectStorageException only when its connection is down
                # (a missing object is waited for): not the task's fault, so no failure is sent; the adapter
                # reconnects and the task, kept in its job if it has one, is sent again.
                blobs = await self._load_blobs(task)
                work = TaskWork(
                    blobs=blobs, resources=request.resources, queue=request.queue,
                    timeout_seconds=request.timeout_seconds,
                )  # fmt: skip
                outcome = await self._engine.submit(work)
            await self._send_result(task, outcome)
            self.completed += 1
            logger.info("task %s: %s after %.3fs", task_id.hex(), "success" if outcome.success else "failure",
                        time.monotonic() - started)  # fmt: skip
        except asyncio.CancelledError:
            logger.info("task %s: cancelled, no result is sent", task_id.hex())
            raise
        except ObjectStorageException as exc:
            logger.info("task %s: Scaler's object storage is unreachable (%s); no result is sent", task_id.hex(), exc)
            self._storage_lost = exc
        finally:
            self._running.pop(task_id, None)
            self._wake.set()

    def _warn_lost_capabilities(self) -> None:
        """Once per adapter run: every task with capabilities fails the same way until the scheduler is replaced."""
        if not self._warned_lost_capabilities:
            self._warned_lost_capabilities = True
            logger.warning("tasks with capabilities are refused: %s", LOST_CAPABILITIES_HINT)

    async def _send_result(self, task: Task, outcome: TaskOutcome) -> None:
        assert self._connector_storage is not None
        result_object_id = ObjectID.generate_object_id(task.source)
        await self._connector_storage.set_object(result_object_id, outcome.body)
        await self._send(
            ObjectInstruction(
                instructionType=ObjectInstruction.ObjectInstructionType.create,
                objectUser=task.source,
                objectMetadata=ObjectMetadata(
                    objectIds=(result_object_id,),
                    objectTypes=(ObjectMetadata.ObjectContentType.object,),
                    objectNames=(f"<res {result_object_id.hex()[:6]}>".encode(),),
                ),
            )
        )
        await self._send(
            TaskResult(
                taskId=TaskID(bytes(task.taskId)),
                resultType=TaskResultType.success if outcome.success else TaskResultType.failed,
                metadata=b"",
                results=[bytes(result_object_id)],
            )
        )

    async def _send(self, message: Any) -> None:
        assert self._connector_external is not None
        await self._connector_external.send(message, detached=True)

    def close_intake(self) -> None:
        """Take no new task and start no queued one (shutdown)."""
        self._intake_open = False
        self._wake.set()

    def reopen_intake(self) -> None:
        """A new session: take tasks again; a storage failure of the last session is its own."""
        self._intake_open = True
        self._storage_lost = None

    async def abandon_all(self) -> None:
        """Forget every queued and running task without sending results (the scheduler is gone, or we leave and
        it re-routes them). Their jobs are the engine's business: kept for re-attach, or stopped at shutdown."""
        self._queue.clear()
        self._queued.clear()
        runners = list(self._running.values())
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._running.clear()
