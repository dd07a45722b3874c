"""Finding jobs by name: ListJobs with a name-prefix filter on each queue, then DescribeJobs of the live ones for
their payloads (which map a job to its tasks)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from scaler_aws_batch.aws_calls import AwsCalls, error_code
from scaler_aws_batch.aws_clients import BatchClients
from scaler_aws_batch.backends.aws_batch.responses import job_state
from scaler_aws_batch.backends.base import PAYLOAD_PARAMETER, ListedJob
from scaler_aws_batch.errors import BackendError

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import DescribeJobsResponseTypeDef, ListJobsResponseTypeDef

logger = logging.getLogger(__name__)


class JobFinder:
    def __init__(self, calls: AwsCalls, clients: BatchClients, max_describe_batch: int) -> None:
        self._calls, self._clients, self._max_describe_batch = calls, clients, max_describe_batch

    def find(self, name_prefix: str, queues: Sequence[str]) -> list[ListedJob]:
        # ListJobs takes one filter; with a JOB_NAME filter it returns jobs in every status, and a trailing "*" makes
        # the value a prefix match. Live jobs are then described (100 ids a call) for their payloads.
        found: dict[str, ListedJob] = {}
        for queue in dict.fromkeys(queues):
            found.update(self._list(name_prefix, queue))
        live = [job_id for job_id, job in found.items() if not job.state.is_final]
        for start in range(0, len(live), self._max_describe_batch):
            chunk = live[start : start + self._max_describe_batch]
            try:
                response = self._calls.call("DescribeJobs", functools.partial(self._describe_raw, chunk))
            except botocore.exceptions.ClientError as exc:
                raise BackendError(f"DescribeJobs failed ({error_code(exc)})") from exc
            for job in response.get("jobs", []):
                listed = found.get(job.get("jobId", ""))
                if listed is not None:
                    payload = job.get("parameters", {}).get(PAYLOAD_PARAMETER)
                    found[listed.job_id] = dataclasses.replace(listed, payload=payload)
        logger.info("found %d job(s) named %s* (%d live)", len(found), name_prefix, len(live))
        return list(found.values())

    def _list(self, name_prefix: str, queue: str) -> dict[str, ListedJob]:
        found: dict[str, ListedJob] = {}
        kwargs: dict[str, Any] = {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [f"{name_prefix}*"]}]}
        while True:
            try:
                page = self._calls.call("ListJobs", functools.partial(self._list_jobs_page, kwargs))
            except botocore.exceptions.ClientError as exc:
                raise BackendError(f"ListJobs on queue {queue!r} failed ({error_code(exc)})") from exc
            for summary in page.get("jobSummaryList", []):
                state = job_state(summary.get("status", ""))
                if state is None or not summary.get("jobName", "").startswith(name_prefix):
                    continue
                size = summary.get("arrayProperties", {}).get("size")
                found[summary["jobId"]] = ListedJob(summary["jobId"], summary["jobName"], state, size)
            token = page.get("nextToken")
            if not token:
                return found
            kwargs["nextToken"] = token

    def _list_jobs_page(self, kwargs: dict[str, Any]) -> ListJobsResponseTypeDef:
        return self._clients.batch.list_jobs(**kwargs)

    def _describe_raw(self, job_ids: list[str]) -> DescribeJobsResponseTypeDef:
        return self._clients.batch.describe_jobs(jobs=job_ids)
