"""A narrow fix for a Scaler 2.9.0 scheduler bug that drops per-task capabilities.

The scheduler converts a task's capabilities to a ``dict`` on arrival and later forwards the same message to the
worker; serializing a ``dict`` into the capnp list field loses every name and value, so a worker receives
``[TaskCapability(name='', value=0)]`` instead of ``{"vcpus": 2, "memory": 4096}``. Routing inside the scheduler is
unaffected (it uses the dict); only what reaches workers is lost.

:func:`patch_task_capability_forwarding` makes the scheduler send workers a copy of the task with the capabilities
rebuilt through Scaler's own ``dict_to_capabilities``. It is applied by ``scaler-batch scheduler`` (a drop-in for
``scaler_scheduler``) and by the embedded scheduler of the demo and the tests. Without it, tasks without capabilities
run as usual, and the adapter refuses each task with capabilities with
:class:`~scaler_aws_batch.errors.CapabilitiesLostError` (see :func:`scaler_aws_batch.capabilities.parse_capabilities`)
rather than run it with resources it did not ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

_PATCHED_FLAG = "_scaler_aws_batch_capability_patch"


def patch_task_capability_forwarding() -> bool:
    """Apply the fix once in this process. Returns False when this Scaler does not need it (or looks different)."""
    from scaler.protocol.capnp import Task
    from scaler.protocol.helpers import dict_to_capabilities
    from scaler.scheduler.controllers import task_controller

    controller = task_controller.VanillaTaskController
    name = "_VanillaTaskController__send_task_to_worker"
    original = getattr(controller, name, None)
    if original is None or getattr(original, _PATCHED_FLAG, False):
        return False

    async def send_task_to_worker(self: Any, worker_id: Any, task_id: Any) -> None:
        task = self._task_id_to_task[task_id]
        if not isinstance(task.capabilities, dict) or not task.capabilities:
            await original(self, worker_id, task_id)
            return
        wire_task = Task(
            taskId=task.taskId,
            source=task.source,
            metadata=task.metadata,
            funcObjectId=task.funcObjectId,
            functionArgs=[Task.Argument(type=argument.type, data=argument.data) for argument in task.functionArgs],
            capabilities=dict_to_capabilities(task.capabilities),
        )
        await self._binder.send(worker_id, wire_task, detached=True)

    setattr(send_task_to_worker, _PATCHED_FLAG, True)
    setattr(controller, name, send_task_to_worker)
    logger.info("scaler-aws-batch: scheduler forwards task capabilities to workers")
    return True


def run_patched_scheduler(argv: Sequence[str]) -> int:
    """``scaler-batch scheduler ARGS``: Scaler's own scheduler entry point with the fix applied."""
    import sys

    from scaler.entry_points.scheduler import main as scheduler_main

    patch_task_capability_forwarding()
    sys.argv = ["scaler_scheduler", *argv]
    scheduler_main()
    return 0
