"""What both adapters' setups share: emulator settings, request counting, the cluster handle and small helpers."""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from scaler import Client

from batch_emulator import BatchEmulator, EmulatorConfig

BUCKET = "scaler-bench-bucket"
PREFIX = "scaler-tasks"
#: Dummy credentials; the emulator accepts any.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
#: How long an adapter may take to answer its first task (a cold scheduler, worker and job process).
READY_TIMEOUT_SECONDS = 120.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclasses.dataclass(frozen=True)
class EmulatorSettings:
    """The emulator settings every run of every adapter uses (recorded in the JSON output)."""

    delay_submitted: float = 0.05
    delay_pending: float = 0.05
    delay_runnable: float = 0.05
    delay_starting: float = 0.05
    max_running_jobs: int = 8
    submit_tps: float = 50.0

    def config(self) -> EmulatorConfig:
        return EmulatorConfig(
            delay_submitted=self.delay_submitted,
            delay_pending=self.delay_pending,
            delay_runnable=self.delay_runnable,
            delay_starting=self.delay_starting,
            max_running_jobs=self.max_running_jobs,
            tps_limits={"SubmitJob": self.submit_tps},
        )


@dataclasses.dataclass
class Cluster:
    """A running scheduler + adapter on an emulator, with a connected client."""

    adapter: str
    client: Client
    emulator: BatchEmulator
    requests: RequestCounter
    log_paths: list[pathlib.Path]


def _s3_operation(method: str, path: str, query: str) -> str:
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if method == "PUT":
        return "PutObject" if has_key else "CreateBucket"
    if method == "GET":
        return "GetObject" if has_key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "DELETE":
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return f"{method} {'object' if has_key else 'bucket'}"


class RequestCounter:
    """Counts the non-Batch requests (S3, CloudWatch Logs) that reach the emulator's endpoint, by operation.

    It wraps the emulator's front WSGI app (a private attribute: this is benchmark instrumentation, not an API).
    Requests from the adapters and from the job processes are both counted.
    """

    def __init__(self, emulator: BatchEmulator) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        server = emulator._front
        inner: WsgiApp = server.app

        def counting_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            self._count(environ)
            return inner(environ, start_response)

        server.app = counting_app

    def _count(self, environ: dict[str, Any]) -> None:
        auth = str(environ.get("HTTP_AUTHORIZATION", ""))
        try:
            service = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")[3]
        except IndexError:
            return
        if service == "batch":
            return  # the emulator counts Batch calls itself
        if service == "s3":
            method, path = str(environ.get("REQUEST_METHOD", "")), str(environ.get("PATH_INFO", ""))
            name = "s3:" + _s3_operation(method, path, str(environ.get("QUERY_STRING", "")))
        else:
            target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
            name = f"{service}:{target.rsplit('.', 1)[-1] or environ.get('REQUEST_METHOD', '')}"
        with self._lock:
            self.counts[name] += 1

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))


def api_snapshot(cluster: Cluster) -> dict[str, Any]:
    """Batch calls (from the emulator) and S3/Logs calls (from the request counter) since the last reset."""
    batch = cluster.emulator.api_calls.snapshot()
    return {
        "batch": dict(sorted(batch["calls"].items())),
        "batch_throttled": dict(sorted(batch["throttled"].items())),
        "max_describe_ids": batch["max_describe_ids"],
        "describe_ids_total": batch["describe_ids_total"],
        "other": cluster.requests.snapshot(),
    }


def reset_counters(cluster: Cluster) -> None:
    cluster.emulator.reset_api_calls()
    cluster.requests.reset()


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def describe_error(exc: BaseException) -> str:
    """One line for the report: the exception type and the first line of its message, shortened."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:300] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
