"""A stored array payload is bound to its job, end to end: the adapter on the aws-batch backend against the Batch
emulator, a real Scaler scheduler and client. Someone with write access to the bucket (but not the signing key)
replaces a pending array's payload object with an earlier genuine payload of the same adapter: nothing runs again,
and the client is told the payload was replaced, not that a result was deleted."""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from conftest import WAIT_SECONDS, wait_for
from harness import BUCKET, PREFIX, AwsHarness
from scaler_aws_batch.errors import PayloadTamperedError
from scaler_aws_batch.job_parameter import IndexedParameter, parse_parameter

pytestmark = pytest.mark.e2e

TASKS = 8  # one array job
BALLAST = 1024  # random bytes per task: too big to travel inline, so the array's payload is stored (indexed)


def _make_work() -> Callable[[str, int, bytes], int]:
    def work(marks: str, key: int, ballast: bytes) -> int:
        """Leaves one marker file per execution."""
        import pathlib as _pathlib
        import uuid as _uuid

        (_pathlib.Path(marks) / f"{key}-{_uuid.uuid4().hex}").touch()
        return key * 2

    return work


#: A nested function travels by value (cloudpickle), so the job need not import this test module.
work = _make_work()


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsHarness]:
    with AwsHarness(tmp_path_factory.mktemp("binding")).start() as harness:
        yield harness


def _indexed_jobs(aws: AwsHarness) -> dict[str, IndexedParameter]:
    """The array jobs with a stored (indexed) payload, by job id."""
    found: dict[str, IndexedParameter] = {}
    for job in aws.job_records():
        if job["payload"].startswith("indexed:"):
            parameter = parse_parameter(job["payload"])
            assert isinstance(parameter, IndexedParameter)
            found[job["jobId"]] = parameter
    return found


def _submit_held(aws: AwsHarness, marks: pathlib.Path, keys: range) -> tuple[list[Future[Any]], IndexedParameter]:
    """Submit one array while the emulator starts nothing; its indexed payload parameter once it is submitted."""
    before = set(_indexed_jobs(aws))
    futures = [aws.client.submit(work, str(marks), key, os.urandom(BALLAST)) for key in keys]
    wait_for(lambda: bool(set(_indexed_jobs(aws)) - before), "the array with a stored payload to be submitted")
    (job_id,) = set(_indexed_jobs(aws)) - before
    return futures, _indexed_jobs(aws)[job_id]


def _executions(marks: pathlib.Path) -> collections.Counter[int]:
    return collections.Counter(int(path.name.split("-")[0]) for path in marks.iterdir())


def test_a_replayed_genuine_array_payload_runs_nothing_and_names_tampering(
    aws: AwsHarness, tmp_path: pathlib.Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    s3 = aws.emulator.client("s3")
    try:
        # The earlier array: held while its genuine, signed payload is copied, then run to the end.
        aws.emulator.set_max_running_jobs(0)
        earlier_futures, earlier = _submit_held(aws, marks, range(TASKS))
        earlier_payload = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{earlier.key}")["Body"].read()
        aws.emulator.set_max_running_jobs(8)
        assert [future.result(timeout=WAIT_SECONDS) for future in earlier_futures] == [k * 2 for k in range(TASKS)]

        # The later array, held pending; its payload object is replaced with the earlier one.
        aws.emulator.set_max_running_jobs(0)
        later_keys = range(100, 100 + TASKS)
        later_futures, later = _submit_held(aws, marks, later_keys)
        assert later.key != earlier.key and later.header_sha256 != earlier.header_sha256
        aws.put_stored_object(later.key, earlier_payload)
    finally:
        aws.emulator.set_max_running_jobs(8)

    errors: list[BaseException] = []
    for future in later_futures:
        with pytest.raises(PayloadTamperedError) as raised:
            future.result(timeout=WAIT_SECONDS)
        errors.append(raised.value)
    executions = _executions(marks)
    assert executions == collections.Counter(range(TASKS)), "an earlier task ran again, or a later one ran"
    assert len(errors) == TASKS
    for error in errors:
        message = str(error)
        assert "tampering" in message and "replaced" in message, message
        assert "deletes objects" not in message
