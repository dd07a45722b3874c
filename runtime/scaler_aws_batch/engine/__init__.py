"""The shared job engine: everything a backend does not do, as a package of parts with one job each.

Data flows one way, from the facade down; decisions travel back as return values:

- :mod:`.facade` — :class:`JobEngine`, what the adapter calls: submit, cancel, run, take_stock, shutdown.
- :mod:`.packer` — tasks that share serializer, resources, queue and timeout gather into array jobs (pure timing).
- :mod:`.submitter` — plan, upload, submit; dedupe after an ambiguous failure; retry-or-fail decisions.
- :mod:`.payload` — how a group's payload travels (inline, gzip, stored objects, ref, indexed) and the upload cache.
- :mod:`.ledger` — which task is in which job, which wait to be sent again (no I/O).
- :mod:`.reconciler` — the one loop: list results, describe jobs, expire the re-attach grace.
- :mod:`.watch` — the vanish clock (paused by failed calls) and the RUNNABLE watch.
- :mod:`.resolver` — read and check a result; failure -> error; Spot -> On-Demand decision.
- :mod:`.failures` — classification of a FAILED job without a result.
- :mod:`.accounting` — usage accounting for the usage log.
- :mod:`.stopping` — stopping one job, or all of them at shutdown within a bound.
- :mod:`.settings`, :mod:`.work` — the settings, and the task and outcome types that cross the boundary.

Outages: a submission that meets throttling, server errors or expired credentials is requeued with backoff until
``submit_deadline_seconds``; only then does it fail, with the hint of its error class. Re-attachment
(:mod:`scaler_aws_batch.reattach`): job names start with the adapter id, so a restarted adapter finds its live jobs
and their task tables in the backend alone.
"""

from scaler_aws_batch.engine.facade import JobEngine
from scaler_aws_batch.engine.failures import classify_failure
from scaler_aws_batch.engine.ledger import SCALER_RESTARTED_REASON
from scaler_aws_batch.engine.payload import PayloadPlan, new_nonce, plan_payload
from scaler_aws_batch.engine.settings import EngineSettings
from scaler_aws_batch.engine.work import TaskOutcome, TaskWork

__all__ = [
    "SCALER_RESTARTED_REASON",
    "EngineSettings",
    "JobEngine",
    "PayloadPlan",
    "TaskOutcome",
    "TaskWork",
    "classify_failure",
    "new_nonce",
    "plan_payload",
]
