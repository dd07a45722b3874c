"""Checks ``scaler-batch worker`` runs before it takes a task, so misconfiguration stops it at once with what to fix
instead of surfacing when the first task arrives (or, with a missing bucket, after the user's code has run).

In order: the scheduler answers on its address; the backend's own checks (AWS: credentials, queues ENABLED and
VALID, the job definition ACTIVE and naming the signing secret, regions that agree, the compute environments'
largest instance); the store accepts a probe object, which is then deleted.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlparse

from scaler_aws_batch.backends.base import JobBackend
from scaler_aws_batch.errors import BackendError, StoreError
from scaler_aws_batch.stores.base import ObjectStore

logger = logging.getLogger(__name__)

#: How long the worker keeps trying to reach the scheduler (it may be starting alongside), well under 30 s.
SCHEDULER_WAIT_SECONDS: Final = 15.0
_CONNECT_ATTEMPT_SECONDS: Final = 2.0
_RETRY_PAUSE_SECONDS: Final = 0.25
PROBE_PREFIX: Final = "probe/"


class StartupCheckError(Exception):
    """The worker cannot serve: the message says what to fix."""


class StartupInterrupted(Exception):
    """SIGTERM or SIGINT arrived while the checks ran (``stop`` was set)."""


def _stop_if_asked(stop: threading.Event) -> None:
    if stop.is_set():
        raise StartupInterrupted()


def check_scheduler_reachable(
    address: str, *, wait_seconds: float = SCHEDULER_WAIT_SECONDS, stop: threading.Event | None = None
) -> None:
    """Open (and close) a TCP connection to a ``tcp://host:port`` scheduler, retrying for ``wait_seconds`` unless
    ``stop`` is set meanwhile."""
    stop = stop or threading.Event()
    parsed = urlparse(address)
    if parsed.scheme != "tcp":
        return  # ipc:// and inproc:// have no TCP listener to probe
    if parsed.hostname is None or parsed.port is None:
        raise StartupCheckError(f"scheduler address {address!r} has no host:port; pass --scheduler tcp://host:port")
    logger.info("checking that the scheduler at %s is reachable", address)
    deadline = time.monotonic() + wait_seconds
    attempts = 0
    while True:
        _stop_if_asked(stop)
        attempts += 1
        try:
            with socket.create_connection((parsed.hostname, parsed.port), timeout=_CONNECT_ATTEMPT_SECONDS):
                logger.info("scheduler %s is reachable (attempt %d)", address, attempts)
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        if time.monotonic() + _RETRY_PAUSE_SECONDS >= deadline:
            raise StartupCheckError(
                f"cannot reach the scheduler at {address} ({reason}; {attempts} attempts in {wait_seconds:.0f}s): "
                "start the scheduler first, or fix --scheduler / SCALER_BATCH_SCHEDULER"
            )
        stop.wait(_RETRY_PAUSE_SECONDS)


def check_store_writable(store: ObjectStore) -> None:
    """Write a probe object to the store and delete it: the results of every task will be written there."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        store.put(key, b"scaler-batch worker start-up probe")
        store.delete(key)
    except StoreError as exc:
        raise StartupCheckError(
            f"cannot write to the object store {store.url}: {exc}. Check that the bucket exists in this region and "
            "that the worker may write under its prefix (the stack's AdapterPolicyArn policy)"
        ) from exc


def run_startup_checks(
    *,
    scheduler: str,
    backend: JobBackend,
    queues: Sequence[str],
    store: ObjectStore,
    scheduler_wait_seconds: float,
    stop: threading.Event,
) -> None:
    """Every check, cheapest first. Raises :class:`StartupCheckError`, or :class:`StartupInterrupted` once ``stop``
    is set."""
    started = time.monotonic()
    check_scheduler_reachable(scheduler, wait_seconds=scheduler_wait_seconds, stop=stop)
    _stop_if_asked(stop)
    try:
        backend.check_ready(queues)
    except BackendError as exc:
        raise StartupCheckError(str(exc)) from exc
    _stop_if_asked(stop)
    check_store_writable(store)
    logger.info("start-up checks passed in %.2fs", time.monotonic() - started)
