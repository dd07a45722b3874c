"""Counting S3 requests by operation and by requester (the jobs, or anyone else: the adapter, a test).

Jobs are told apart by the app id the emulator puts in their environment (`AWS_SDK_UA_APP_ID`): AWS SDKs append it
to the User-Agent as `app/<id>`, whether the runner is a process or a thread (the runner's store passes it on).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

JOB_APP_ID = "batch-emulator-job"
JOB_REQUESTER = "jobs"
OTHER_REQUESTER = "clients"


def s3_operation(environ: dict[str, Any]) -> str:
    """The S3 operation of a path-style request (the emulator's endpoint is path-style)."""
    method = str(environ.get("REQUEST_METHOD", "GET"))
    path = str(environ.get("PATH_INFO", "")).lstrip("/")
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    on_object = "/" in path and not path.endswith("/")
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if not on_object:
        if method == "GET" and "list-type" in query:
            return "ListObjectsV2"
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
            method, method
        )
    if "uploadId" in query or "uploads" in query:
        return "MultipartUpload"
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


class S3Requests:
    """Thread-safe counts: `by_requester[requester][operation]`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_requester: dict[str, Counter[str]] = {JOB_REQUESTER: Counter(), OTHER_REQUESTER: Counter()}

    def record(self, environ: dict[str, Any]) -> None:
        agent = str(environ.get("HTTP_USER_AGENT", ""))
        requester = JOB_REQUESTER if f"app/{JOB_APP_ID}" in agent else OTHER_REQUESTER
        operation = s3_operation(environ)
        with self._lock:
            self.by_requester[requester][operation] += 1

    def clear(self) -> None:
        with self._lock:
            for counts in self.by_requester.values():
                counts.clear()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {requester: dict(counts) for requester, counts in self.by_requester.items()}
