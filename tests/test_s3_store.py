"""The S3 store against the emulator's S3 over HTTP: ranged reads (indexed array payloads), results listings, and
the timestamps its clients parse without dateutil."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from botocore.utils import parse_timestamp

from batch_emulator import BatchEmulator
from scaler_aws_batch.stores.s3 import S3Store, parse_s3_timestamp, s3_client_config, s3_session

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "store-test"


@pytest.fixture(scope="module")
def client() -> Iterator[S3Client]:
    with BatchEmulator() as emulator:
        emulator.client("s3").create_bucket(Bucket=BUCKET)
        session = s3_session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=emulator.region)
        yield session.client("s3", endpoint_url=emulator.endpoint_url, config=s3_client_config())


@pytest.fixture
def store(client: S3Client) -> S3Store:
    return S3Store(BUCKET, "prefix", client=client)


def test_a_ranged_read_returns_those_bytes_and_the_object_size(store: S3Store) -> None:
    data = os.urandom(100_000)
    store.put("payloads/p", data)
    assert store.read_range("payloads/p", 0, 64 * 1024) == (data[: 64 * 1024], len(data))
    assert store.read_range("payloads/p", 99_990, 100_010) == (data[99_990:], len(data))  # past the end: up to it
    assert store.read_range("payloads/p", 5, 6) == (data[5:6], len(data))
    with pytest.raises(ValueError, match="empty range"):
        store.read_range("payloads/p", 7, 7)


def test_listing_and_object_timestamps_parse_as_aware_datetimes(store: S3Store, client: S3Client) -> None:
    for index in range(3):
        store.put(f"results/t{index}", b"x")
    assert store.list_keys("results/") >= {"results/t0", "results/t1", "results/t2"}
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="prefix/results/")["Contents"]
    header = client.head_object(Bucket=BUCKET, Key="prefix/results/t0")["LastModified"]  # an HTTP date
    now = datetime.datetime.now(datetime.timezone.utc)
    for stamp in [item["LastModified"] for item in listed] + [header]:
        assert stamp.tzinfo is not None and abs((now - stamp).total_seconds()) < 3600


@pytest.mark.parametrize(
    "value",
    ["2026-11-22T05:40:00.000Z", "2026-11-22T05:40:00Z", "Sat, 22 Nov 2026 05:40:00 GMT", "2026-11-22T05:40:00",
     "1700000000"],
)  # fmt: skip
def test_the_fast_timestamp_parser_agrees_with_botocores(value: str) -> None:
    assert parse_s3_timestamp(value) == parse_timestamp(value)
