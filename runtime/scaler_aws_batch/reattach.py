"""Durable identity: how a restarted adapter finds its jobs and results again, from the backend and store alone.

* **Adapter id.** Every job name starts with ``scaler-<adapter id>-`` and every job is tagged with the id. The id is
  ``--adapter-id``, or by default derived from the scheduler address, the backend, its queue (or work directory)
  and ``--name`` (:func:`default_adapter_id`), so the same deployment restarted gets the same id. Adapters started
  the same way at once take distinct ids, one per free slot of the id's lease (:mod:`scaler_aws_batch.lease`).
* **Task table.** A job's tasks are in its payload (the envelope's header lists the task ids in array-index order),
  so a job found by name, even one whose SubmitJob was in flight when the adapter died, maps back to its tasks.
* **Stock** (:func:`take_stock`): this adapter's live jobs (ListJobs by name prefix, then DescribeJobs for their
  payloads) and the results already in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence

from scaler_aws_batch.backends.base import JobBackend, JobState, ListedJob
from scaler_aws_batch.errors import PayloadError, PayloadReplacedError, StoreError
from scaler_aws_batch.indexed_payload import indexed_task_ids
from scaler_aws_batch.job_parameter import IndexedParameter, InlineParameter, parse_parameter
from scaler_aws_batch.signing import KeyRing
from scaler_aws_batch.stores.base import ObjectStore
from scaler_aws_batch.wire import RESULTS_PREFIX, decode_payload, sha256_hex

logger = logging.getLogger(__name__)

ADAPTER_ID_CHARS = 12


def default_adapter_id(*, scheduler: str, backend: str, queue: str, name: str = "") -> str:
    """A stable id for one deployment: the same inputs give the same id across restarts."""
    digest = hashlib.sha256("\n".join((scheduler, backend, queue, name)).encode()).hexdigest()
    return digest[:ADAPTER_ID_CHARS]


@dataclasses.dataclass(frozen=True)
class FoundJob:
    """A job the backend still reports for this adapter: its id, state, array size and task ids (index order)."""

    job_id: str
    name: str
    state: JobState
    array_size: int | None
    task_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Stock:
    live_jobs: tuple[FoundJob, ...]
    stored_results: frozenset[str]  # task ids
    unreadable: tuple[ListedJob, ...] = ()  # live jobs of this adapter whose task table cannot be read
    own_job_ids: frozenset[str] = frozenset()  # every job found under this adapter's name, in any state


@dataclasses.dataclass
class ShutdownReport:
    stopped: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)


def payload_task_ids(parameter: str, read_stored: Callable[[str], bytes], keys: KeyRing) -> tuple[str, ...]:
    """The task ids a job runs, in array-index order, from its payload parameter alone (``read_stored`` fetches a
    stored envelope by key). This is how a restarted adapter maps a job it finds in the backend to its tasks; the
    digest the parameter carries and every signature are checked first, so a stored payload replaced by another
    genuine one (an earlier job's) is refused rather than adopted (:class:`PayloadReplacedError`)."""
    parsed = parse_parameter(parameter)
    if isinstance(parsed, IndexedParameter):
        return indexed_task_ids(read_stored(parsed.key), keys, header_sha256=parsed.header_sha256)
    if isinstance(parsed, InlineParameter):
        envelope = parsed.envelope
    else:
        envelope = read_stored(parsed.key)
        if sha256_hex(envelope) != parsed.sha256:
            raise PayloadReplacedError(
                f"payload {parsed.key} does not match the SHA-256 in the job's parameters: it was replaced or "
                "corrupted after submission"
            )
    return tuple(task.task_id for task in decode_payload(envelope, keys).tasks)


def take_stock(
    backend: JobBackend, store: ObjectStore, name_prefix: str, queues: Sequence[str | None], keys: KeyRing
) -> Stock:
    """Blocking: this adapter's live jobs with their task tables (from their signed payloads), and the task ids with
    a stored result."""
    live: list[FoundJob] = []
    unreadable: list[ListedJob] = []
    listed_jobs = backend.find_jobs(name_prefix, queues)
    for listed in listed_jobs:
        if listed.state.is_final:
            continue  # its results (if any) are found in the store
        task_ids = listed.task_ids
        if task_ids is None:
            try:
                task_ids = payload_task_ids(listed.payload or "", store.get, keys)
            except (PayloadError, StoreError) as exc:
                logger.warning("job %s (%s): cannot read its task table: %s", listed.job_id, listed.name, exc)
                unreadable.append(listed)
                continue
        live.append(FoundJob(listed.job_id, listed.name, listed.state, listed.array_size, task_ids))
    stored = frozenset(key.removeprefix(RESULTS_PREFIX) for key in store.list_keys(RESULTS_PREFIX))
    own = frozenset(listed.job_id for listed in listed_jobs)
    return Stock(live_jobs=tuple(live), stored_results=stored, unreadable=tuple(unreadable), own_job_ids=own)
