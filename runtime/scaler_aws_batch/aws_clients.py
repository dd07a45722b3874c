"""Building boto3 clients: the one place their retries, timeouts and user agent are set.

Every client of the adapter is called through :class:`scaler_aws_batch.aws_calls.AwsCalls`, which backs off further
on top of botocore's ``standard`` retries and asks the client's owner to rebuild it when AWS refuses the
credentials: :class:`BatchClients` is that owner for the AWS Batch backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.config

if TYPE_CHECKING:
    from mypy_boto3_batch.client import BatchClient
    from mypy_boto3_logs.client import CloudWatchLogsClient

#: botocore's own retries per call (``standard`` mode; botocore's ``max_attempts`` key counts retries after the
#: first request, so 2 means up to 3 requests).
DEFAULT_BOTOCORE_MAX_RETRIES: Final = 2
CONNECT_TIMEOUT_SECONDS: Final = 10
READ_TIMEOUT_SECONDS: Final = 60
USER_AGENT_EXTRA: Final = "scaler-aws-batch"


def client_config(
    *,
    max_retries: int,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_pool_connections: int | None = None,
    user_agent_extra: str | None = None,
) -> botocore.config.Config:
    """A client configuration with ``standard`` retries (``max_retries`` after the first request) and the given
    options; options left None keep botocore's defaults."""
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "max_pool_connections": max_pool_connections,
        "user_agent_extra": user_agent_extra,
    }
    given = {name: value for name, value in options.items() if value is not None}
    return botocore.config.Config(retries={"mode": "standard", "max_attempts": max_retries}, **given)


class BatchClients:
    """The Batch and CloudWatch Logs clients of one backend, and an EC2 client on demand.

    Give ready clients, a ``boto3.Session``, or neither (the default credential chain). Clients built here use
    ``standard`` retries, ``region`` and ``endpoint_url`` (the emulator, VPC endpoints), are built again by
    :meth:`rebuild` and closed by :meth:`close`; given clients are kept as they are.
    """

    batch: BatchClient
    logs: CloudWatchLogsClient

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.Session | None = None,
        batch_client: BatchClient | None = None,
        logs_client: CloudWatchLogsClient | None = None,
        max_retries: int = DEFAULT_BOTOCORE_MAX_RETRIES,
    ) -> None:
        self._region, self._endpoint_url, self._session = region, endpoint_url, session
        self._own_batch, self._own_logs = batch_client is None, logs_client is None
        self._owned: list[BatchClient | CloudWatchLogsClient] = []
        self._config = client_config(
            max_retries=max_retries, connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            user_agent_extra=USER_AGENT_EXTRA,
        )  # fmt: skip
        if batch_client is not None:
            self.batch = batch_client
        if logs_client is not None:
            self.logs = logs_client
        if self.refreshable:
            self._build(session or boto3.Session(region_name=region))

    @property
    def refreshable(self) -> bool:
        """Some client was built here (and so can be built again with fresh credentials)."""
        return self._own_batch or self._own_logs

    def rebuild(self) -> None:
        # A new default session reads the credential chain again; a session the caller chose is kept (its
        # credentials may be explicit), with fresh clients.
        self._build(self._session or boto3.Session(region_name=self._region))

    def ec2(self) -> Any:
        """An EC2 client, for DescribeInstanceTypes once at start."""
        session = self._session or boto3.Session(region_name=self._region)
        return session.client("ec2", region_name=self._region, endpoint_url=self._endpoint_url)

    def _build(self, session: boto3.Session) -> None:
        self.close()
        options: dict[str, Any] = {"region_name": self._region, "endpoint_url": self._endpoint_url}
        if self._own_batch:
            self.batch = session.client("batch", config=self._config, **options)
            self._owned.append(self.batch)
        if self._own_logs:
            self.logs = session.client("logs", config=self._config, **options)
            self._owned.append(self.logs)

    def close(self) -> None:
        for client in self._owned:
            client.close()
        self._owned.clear()
