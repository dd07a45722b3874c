"""The emulator's front server keeps HTTP/1.1 connections alive, so clients do not pay a TCP connect per call."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from batch_emulator import BatchEmulator


@pytest.fixture(scope="module")
def emu() -> Iterator[BatchEmulator]:
    with BatchEmulator() as emulator:
        emulator.client("s3").create_bucket(Bucket="keep-alive")
        yield emulator


def test_one_connection_carries_many_requests(emu: BatchEmulator) -> None:
    s3 = emu.client("s3")

    def signed(method: str, key: str) -> str:
        # Presigned URLs carry their SigV4 signature in the query, so a plain HTTP client can use them.
        url = s3.generate_presigned_url(method, Params={"Bucket": "keep-alive", "Key": key}, ExpiresIn=600)
        parsed = urlparse(url)
        return f"{parsed.path}?{parsed.query}"

    url = urlparse(emu.endpoint_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    try:
        conn.request("PUT", signed("put_object", "key"), body=b"first body")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        assert first.status == 200
        assert first.getheader("Connection") != "close"

        conn.request("GET", signed("get_object", "key"))
        got = conn.getresponse()
        assert (got.status, got.read()) == (200, b"first body")

        conn.request("HEAD", signed("head_object", "key"))
        head = conn.getresponse()
        assert (head.status, head.read(), head.getheader("Content-Length")) == (200, b"", "10")

        conn.request("GET", signed("get_object", "missing"))
        missing = conn.getresponse()
        missing.read()
        assert missing.status == 404

        conn.request("GET", signed("get_object", "key"))
        again = conn.getresponse()
        assert again.read() == b"first body"
        assert conn.sock is sock, "the server closed the connection between requests"
    finally:
        conn.close()


def test_boto3_calls_reuse_their_connection(emu: BatchEmulator) -> None:
    s3 = emu.client("s3")
    batch = emu.client("batch")
    for index in range(20):
        s3.put_object(Bucket="keep-alive", Key=f"k{index}", Body=b"x" * index)
        assert s3.get_object(Bucket="keep-alive", Key=f"k{index}")["Body"].read() == b"x" * index
        assert batch.describe_jobs(jobs=[f"unknown-{index}"])["jobs"] == []
    # botocore's pool opens a new connection only when the server closed the previous one.
    clients: list[Any] = [s3, batch]
    pools = [pool for client in clients for pool in client._endpoint.http_session._manager.pools._container.values()]
    connections = sum(pool.num_connections for pool in pools)
    assert connections == 2
