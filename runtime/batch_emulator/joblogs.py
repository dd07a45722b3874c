"""A job's output, line by line, into CloudWatch Logs (in moto), as the awslogs driver does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from moto.logs.exceptions import LogsClientError, ResourceAlreadyExistsException
from moto.logs.models import logs_backends

from batch_emulator.model import now_ms

LOG = logging.getLogger("batch_emulator")

_LOG_CHUNK_EVENTS = 1000
_LOG_CHUNK_BYTES = 512 * 1024


class JobLogs:
    """Writes log events straight into moto's CloudWatch Logs backend, which runs in this process: what the awslogs
    driver does, without an HTTP request and a botocore call per job (which cost the emulator as much CPU as the
    job itself). Readers (the adapter's GetLogEvents) still go through moto's HTTP API. Creates each group once."""

    def __init__(self, account_id: str, region: str) -> None:
        self._account_id = account_id
        self._region = region
        self._log_groups: set[str] = set()
        self._lock = threading.Lock()  # moto's log streams are not thread-safe

    def put(self, group: str, stream: str, events: list[tuple[int, str]], create: bool) -> None:
        try:
            with self._lock:
                backend = logs_backends[self._account_id][self._region]
                if create:
                    if group not in self._log_groups and group not in backend.groups:
                        backend.create_log_group(group, tags={})
                    self._log_groups.add(group)
                    try:
                        backend.create_log_stream(group, stream)
                    except ResourceAlreadyExistsException:
                        pass  # a later attempt's stream name is new; a re-flush of the same attempt's is not
                for chunk in _chunks(events):
                    backend.put_log_events(group, stream, [{"timestamp": t, "message": m} for t, m in chunk])
        except LogsClientError:
            LOG.exception("batch emulator: writing logs to %s/%s failed", group, stream)


class LogSink:
    """Buffers one attempt's output and pushes it to its log stream on `flush`."""

    def __init__(self, logs: JobLogs, group: str, stream: str) -> None:
        self._logs = logs
        self._group = group
        self._stream = stream
        self._events: list[tuple[int, str]] = []
        self._created = False
        self._last_ts = 0
        self._partial = b""

    def add(self, line: str) -> None:
        if not line:
            return
        ts = max(now_ms(), self._last_ts)
        self._last_ts = ts
        self._events.append((ts, line))

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self.add(raw.rstrip(b"\r").decode("utf-8", errors="replace"))

    def flush(self, final: bool = True) -> None:
        if final and self._partial:
            self.add(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
        if not self._events and self._created:
            return
        events, self._events = self._events, []
        self._logs.put(self._group, self._stream, events, create=not self._created)
        self._created = True


def _chunks(events: list[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    size = 0
    for event in events:
        cost = len(event[1].encode()) + 26
        if chunk and (len(chunk) >= _LOG_CHUNK_EVENTS or size + cost > _LOG_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(event)
        size += cost
    if chunk:
        yield chunk
