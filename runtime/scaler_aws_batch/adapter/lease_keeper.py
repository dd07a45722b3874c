"""Keeping the adapter id's lease while the adapter runs: renewed every third of its TTL until after shutdown
(stopping jobs takes a while, and the id is still this adapter's meanwhile), released at a clean exit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scaler_aws_batch.errors import StoreError
from scaler_aws_batch.lease import Lease

logger = logging.getLogger(__name__)

#: The exit code when another adapter took this adapter's lease over (this one was cut off longer than its TTL).
EXIT_LEASE_LOST = 4


class LeaseKeeper:
    def __init__(self, lease: Lease, lease_seconds: float) -> None:
        self._lease = lease
        self._lease_seconds = lease_seconds
        self.lost = False

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until cancelled. When another adapter took the lease over (this one was paused or cut off longer
        than the TTL), call ``on_lost`` once and return: that adapter owns the jobs now."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                held = await asyncio.to_thread(self._lease.renew)
            except StoreError as exc:  # an outage: try again at the next renewal
                logger.warning("adapter id %s: renewing its lease failed: %s", self._lease.adapter_id, exc)
                continue
            if not held:
                logger.error(
                    "adapter id %s: another adapter took its lease over (this one went unrenewed for %.0fs); "
                    "stopping, leaving the jobs to that adapter", self._lease.adapter_id, self._lease_seconds,
                )  # fmt: skip
                self.lost = True
                on_lost()
                return

    async def release(self) -> None:
        """At a clean exit, after the jobs were stopped or left: the next adapter with this id takes it at once."""
        if self.lost:
            return
        try:
            await asyncio.to_thread(self._lease.release)
        except StoreError as exc:  # the next adapter waits out the TTL instead
            logger.warning("adapter id %s: releasing its lease failed: %s", self._lease.adapter_id, exc)
