"""The in-container runner: what every job executes (``scaler-batch run-job --payload <Ref::payload>``).

It reads its signing key ring (named by the job's environment), reads the payload (inline or from the store), checks
its version and signature before parsing anything, checks that this image can load it (the client's Python
major.minor and cloudpickle major version), runs each task of the job (all of them for a single job, the one at
``AWS_BATCH_JOB_ARRAY_INDEX`` for an array child), and writes one signed result object per task.

Exit codes: 0 whenever every task's result (success or captured exception) was written; non-zero only for
infrastructure failures, so Batch marks the job FAILED and the adapter reports the reason with the job's log tail.
The runner never logs arguments or results, only ids, sizes, states and timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from scaler_aws_batch.contracts import RunnerExit
from scaler_aws_batch.errors import (
    CloudpickleVersionMismatchError,
    ObjectMissingError,
    PayloadError,
    PayloadReplacedError,
    PythonVersionMismatchError,
    ResultRejectedError,
    ResultSerializationError,
    ScalerBatchError,
    SigningKeyError,
    StoreError,
    UnpicklableExceptionError,
)
from scaler_aws_batch.indexed_payload import FIRST_READ_BYTES, read_indexed_entry
from scaler_aws_batch.job_parameter import IndexedParameter, InlineParameter, parse_parameter
from scaler_aws_batch.missing_module_errors import missing_module_error, serializer_module_message
from scaler_aws_batch.signing import KeyRing, load_job_keys
from scaler_aws_batch.stores import ObjectStore, open_store
from scaler_aws_batch.wire import (
    BlobRef,
    Payload,
    TaskEntry,
    TaskResultEnvelope,
    decode_payload,
    decode_result,
    python_version_tag,
    result_key,
    sha256_hex,
)

logger = logging.getLogger("scaler_aws_batch.runner")

EXIT_OK = RunnerExit.OK
EXIT_USAGE = RunnerExit.USAGE
EXIT_BAD_PAYLOAD = RunnerExit.BAD_PAYLOAD
EXIT_PAYLOAD_REPLACED = RunnerExit.PAYLOAD_REPLACED
EXIT_STORE = RunnerExit.STORE


@dataclasses.dataclass(frozen=True)
class JobContext:
    job_id: str
    attempt: int
    array_index: int | None
    compute_environment: str | None = None  # Batch sets AWS_BATCH_CE_NAME; the usage log reports it
    started_at: float = dataclasses.field(default_factory=time.time)  # epoch: the job's start, for the usage log

    @staticmethod
    def from_env(env: Mapping[str, str]) -> JobContext:
        index = env.get("AWS_BATCH_JOB_ARRAY_INDEX")
        return JobContext(
            job_id=env.get("AWS_BATCH_JOB_ID", "local"),
            attempt=int(env.get("AWS_BATCH_JOB_ATTEMPT", "1") or "1"),
            array_index=int(index) if index not in (None, "") else None,
            compute_environment=env.get("AWS_BATCH_CE_NAME") or None,
        )


def serialize_failure(exc: BaseException) -> bytes:
    """Scaler's failure format: the pickled exception (tblib makes its traceback travel along)."""
    try:
        return pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as pickling_error:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        fallback = UnpicklableExceptionError(
            f"{type(exc).__qualname__}: {exc}\n(the exception could not be pickled: {pickling_error})\n{detail}"
        )
        return pickle.dumps(fallback, protocol=pickle.HIGHEST_PROTOCOL)


def _install_traceback_pickling() -> None:
    try:
        import tblib.pickling_support
    except ImportError:  # tracebacks are a convenience; results still travel without them
        logger.warning("tblib is not installed: exceptions will reach the client without their traceback")
        return
    tblib.pickling_support.install()


class _BlobReader:
    """Reads blobs of one payload, inline or from the store, and checks every one against its SHA-256."""

    def __init__(self, payload: Payload, store: ObjectStore) -> None:
        self._payload = payload
        self._store = store
        self._cache: dict[str, bytes] = {}
        #: Stored blobs that did not match their digest, reported to the adapter in the result header.
        self.bad_objects: set[str] = set()

    def read(self, ref: BlobRef) -> bytes:
        cached = self._cache.get(ref.sha256)
        if cached is not None:
            return cached
        if ref.key is None:
            data = self._payload.inline_blob(ref)
        else:
            data = self._store.get(ref.key)
            if sha256_hex(data) != ref.sha256:
                self.bad_objects.add(ref.key)
                raise PayloadError(
                    f"object {ref.key} in {self._store.url} does not match the SHA-256 the adapter recorded: it was "
                    "modified or corrupted after submission; resubmit the task"
                )
        self._cache[ref.sha256] = data
        return data


def _check_compatible(payload: Payload) -> Any:
    """Refuse a payload this image cannot load (another Python minor or cloudpickle major than the client's), with
    both versions and the fix; return the ``cloudpickle`` module otherwise."""
    here = python_version_tag()
    if payload.python != here:
        raise PythonVersionMismatchError(
            f"the client serialized this task under Python {payload.python} but the job image runs Python {here}; "
            f"build the image with the client's version (CDK context python_version={payload.python}) or run "
            f"the adapter with --client-python {here} if the client really uses {here}"
        )
    try:
        import cloudpickle
    except ImportError as exc:
        raise CloudpickleVersionMismatchError(
            f"the job image has no cloudpickle, the client used cloudpickle {payload.cloudpickle}; install "
            f"cloudpickle=={_major(payload.cloudpickle)}.* in the image"
        ) from exc
    ours = str(cloudpickle.__version__)
    if _major(payload.cloudpickle) != _major(ours):
        raise CloudpickleVersionMismatchError(
            f"the client serialized this task with cloudpickle {payload.cloudpickle} but the job image has "
            f"cloudpickle {ours}; payloads load only within one major version: pin cloudpickle=="
            f"{_major(payload.cloudpickle)}.* in the image's requirements (CDK context requirements_file) or "
            f"install cloudpickle {_major(ours)}.x on the clients"
        )
    return cloudpickle


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def _run_one(entry: TaskEntry, payload: Payload, blobs: _BlobReader, context: JobContext) -> TaskResultEnvelope:
    started = time.monotonic()
    status = "success"
    try:
        cloudpickle = _check_compatible(payload)
        serializer_bytes = blobs.read(entry.serializer)
        try:
            serializer: Any = cloudpickle.loads(serializer_bytes)
        except ModuleNotFoundError as exc:
            raise PayloadError(serializer_module_message(exc)) from exc
        except (pickle.UnpicklingError, ImportError, AttributeError, EOFError, TypeError) as exc:
            raise PayloadError(f"cannot load the client's serializer: {type(exc).__name__}: {exc}") from exc
        try:
            function = serializer.deserialize(blobs.read(entry.function))
            arguments = [serializer.deserialize(blobs.read(argument)) for argument in entry.arguments]
        except ModuleNotFoundError as exc:  # pickled by reference to a module this image lacks: say how to fix
            raise missing_module_error(exc, serializer) from exc
        try:
            value = function(*arguments)
        finally:
            del arguments  # free large arguments before serializing the result
        try:
            body = serializer.serialize(value)
        except Exception as exc:  # whatever the serializer raises becomes the task's error
            raise ResultSerializationError(
                f"the task returned a {type(value).__module__}.{type(value).__qualname__} that the client's "
                f"serializer cannot serialize ({type(exc).__name__}: {exc}); return plain data instead"
            ) from exc
    except (StoreError, PayloadError) as exc:
        if isinstance(exc, StoreError) and not isinstance(exc, ObjectMissingError):
            raise  # the store is unreachable: an infrastructure failure, not the task's
        status, body = "failure", serialize_failure(exc)
    except Exception as exc:  # noqa: BLE001 - the task's own exception is its result, in Scaler's format
        status, body = "failure", serialize_failure(exc)
    return TaskResultEnvelope(
        task_id=entry.task_id,
        status="success" if status == "success" else "failure",
        body=body,
        nonce=payload.nonce,
        job_id=context.job_id,
        attempt=context.attempt,
        duration_seconds=time.monotonic() - started,
        bad_objects=tuple(sorted(blobs.bad_objects)),
        started_at=context.started_at,
        stopped_at=time.time(),
        compute_environment=context.compute_environment,
    )


def _load_payload(
    value: str, keys: KeyRing, env: Mapping[str, str] | None, context: JobContext
) -> tuple[Payload, tuple[TaskEntry, ...], ObjectStore | None]:
    """The payload, the tasks this job runs (an array child: its one task) and the store the payload came from."""
    parameter = parse_parameter(value)
    if isinstance(parameter, InlineParameter):
        payload = decode_payload(parameter.envelope, keys)
        return payload, _select(payload, context), None
    store = open_store(parameter.store_url, env)
    if isinstance(parameter, IndexedParameter):
        if context.array_index is None:
            raise PayloadError(
                "an indexed payload is written for the children of an array job, but this job has no array index"
            )
        key = parameter.key
        first, total = store.read_range(key, 0, FIRST_READ_BYTES)
        payload = read_indexed_entry(
            first,
            total,
            lambda start, end: store.read_range(key, start, end)[0],
            context.array_index,
            keys,
            header_sha256=parameter.header_sha256,
        )
        return payload, payload.tasks, store
    stored = store.get(parameter.key)
    if sha256_hex(stored) != parameter.sha256:
        raise PayloadReplacedError(
            f"payload {parameter.key} in {parameter.store_url} does not match the SHA-256 in the job's parameters: "
            "it was replaced (tampering by someone with write access to the bucket) or corrupted after submission; "
            "nothing of it was run; resubmit the task"
        )
    payload = decode_payload(stored, keys)
    return payload, _select(payload, context), store


def _select(payload: Payload, context: JobContext) -> tuple[TaskEntry, ...]:
    if context.array_index is None:
        return payload.tasks
    if not 0 <= context.array_index < len(payload.tasks):
        raise PayloadError(
            f"array index {context.array_index} is outside the payload's {len(payload.tasks)} tasks: the array "
            "size and the payload disagree"
        )
    return (payload.tasks[context.array_index],)


def _earlier_attempt_delivered(store: ObjectStore, key: str, entry: TaskEntry, payload: Payload) -> bool:
    """True when ``key`` holds this submission's own signed result (an earlier attempt ran the task). Anything
    else there (planted before the job ran, left by an earlier run, tampered with) is deleted so this attempt's
    result can take its place."""
    try:
        decode_result(store.get(key), payload.reply_keys, expected_task_id=entry.task_id, expected_nonce=payload.nonce)
    except ObjectMissingError:
        return False
    except ResultRejectedError:
        logger.warning("task %s: a result that this submission did not write was in the store; replacing it",
                       entry.task_id)  # fmt: skip
        store.delete(key)
        return False
    return True


def run(value: str, context: JobContext, keys: KeyRing, env: Mapping[str, str] | None = None) -> int:
    """``env``: where the stores take their endpoint, region and keys (None: the process environment)."""
    try:
        payload, tasks, payload_store = _load_payload(value, keys, env, context)
        result_store = payload_store if payload_store and payload_store.url == payload.result_store else None
        result_store = result_store or open_store(payload.result_store, env)
    except PayloadReplacedError as exc:
        logger.error("job %s: refusing the payload (tampering): %s", context.job_id, exc)
        return EXIT_PAYLOAD_REPLACED
    except PayloadError as exc:
        logger.error("job %s: refusing the payload: %s", context.job_id, exc)
        return EXIT_BAD_PAYLOAD
    except (StoreError, ValueError) as exc:
        logger.error("job %s: cannot read the payload: %s", context.job_id, exc)
        return EXIT_STORE

    logger.info(
        "job %s attempt %d: %d task(s), python %s", context.job_id, context.attempt, len(tasks), python_version_tag()
    )
    blobs = _BlobReader(payload, result_store)
    for entry in tasks:
        key = result_key(entry.task_id)
        try:
            # Batch runs jobs at least once: a later attempt first looks for an earlier attempt's result. A first
            # attempt has none to find, so it looks only when its create-only write finds the key taken.
            if context.attempt > 1 and _earlier_attempt_delivered(result_store, key, entry, payload):
                logger.info("task %s: result already stored by an earlier attempt, skipping", entry.task_id)
                continue
            result = _run_one(entry, payload, blobs, context)
            encoded = result.encode(payload.reply_keys)
            written = result_store.put_if_absent(key, encoded)
            if (
                not written
                and context.attempt == 1
                and not _earlier_attempt_delivered(result_store, key, entry, payload)
            ):
                written = result_store.put_if_absent(key, encoded)  # what was there was not ours, and is gone now
        except StoreError as exc:
            logger.error("task %s: cannot reach the store: %s", entry.task_id, exc)
            return EXIT_STORE
        logger.info(
            "task %s: %s in %.3fs, result %d bytes%s",
            entry.task_id,
            result.status,
            result.duration_seconds,
            len(result.body),
            "" if written else " (an earlier attempt's result was kept)",
        )
    return EXIT_OK


LOG_FORMAT = "%(asctime)s %(levelname)s runner: %(message)s"


def _configure_logging(level: str, handler: logging.Handler | None) -> None:
    """The runner's lines go to stderr, which Batch ships to CloudWatch; nothing else in the job logs there."""
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(level.upper())


def _exit_on_sigterm_as_pid_1() -> None:
    """A container's first process (PID 1: Batch starts the job's command so) ignores every signal it has no handler
    for. Without one, the SIGTERM of TerminateJob, a timeout or a Spot reclaim would do nothing, and the job would run
    on until the SIGKILL 30 seconds later."""
    if os.getpid() == 1 and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)  # as the default action would: the exit code Batch reports for SIGTERM, 143


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaler-batch run-job", description="Run the tasks of one job.")
    parser.add_argument(
        "--payload", required=True, help="the job's payload parameter (inline:..., ref:... or indexed:...)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    log_handler: logging.Handler | None = None,
) -> int:
    """Run one job. ``env`` replaces the process environment for everything the job reads (AWS_BATCH_* variables,
    store endpoint and credentials), so a caller may run jobs in threads; ``log_handler`` replaces stderr."""
    environment = os.environ if env is None else env
    if env is None:
        _exit_on_sigterm_as_pid_1()
    _configure_logging(environment.get("SCALER_BATCH_LOG_LEVEL", "INFO"), log_handler)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        context = JobContext.from_env(environment)
    except ValueError as exc:
        logger.error("bad AWS_BATCH_* environment: %s", exc)
        return EXIT_USAGE
    try:
        keys = load_job_keys(environment)
    except SigningKeyError as exc:
        logger.error("job %s: %s", context.job_id, exc)
        return EXIT_BAD_PAYLOAD
    _install_traceback_pickling()
    try:
        return run(args.payload, context, keys, env)
    except ScalerBatchError as exc:
        logger.error("job %s: %s", context.job_id, exc)
        return EXIT_STORE


if __name__ == "__main__":
    sys.exit(main())
