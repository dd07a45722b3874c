"""What the adapter lost when its session with Scaler ended, whether a Scaler process ended (a restart), and the
one line an outage is reported in.

The restart signal (docs/reliability.md): Scaler 2.9's scheduler keeps its tasks in memory and never closes a
worker's connection while it runs (it drops a worker from its state, not its socket); its object storage server
keeps the tasks' inputs in memory, and the scheduler never reconnects to a new one. So a connection closed by the
peer's end (YMQ's ``ConnectorSocketClosedByRemoteEnd``: its process exited, was killed or restarted; the kernel
closes its sockets), or a connection to its address refused (nothing listens there), means the process that held
our tasks (or their inputs) is gone: they will never be sent again. A network stall, or a peer that stopped
answering, shows up as our death timeout, a reset or a connect timeout instead: the same processes may still hold
the tasks, and the full re-attach grace applies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import time
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_SECONDS = 5.0


class Lost(enum.Enum):
    SCHEDULER_ENDED = "scheduler-ended"  # closed by its end, or refused: its process is gone (restart)
    SCHEDULER = "scheduler"  # no answer (our death timeout), or another connection error: maybe the same process
    STORAGE = "storage"  # Scaler's object storage server: no answer, or another connection error
    STORAGE_ENDED = "storage-ended"  # closed by its end, or refused: its process is gone with the tasks' inputs

    @property
    def ended(self) -> bool:
        """A Scaler process is gone: the tasks it held will never be sent again."""
        return self in (Lost.SCHEDULER_ENDED, Lost.STORAGE_ENDED)

    @property
    def storage(self) -> bool:
        return self in (Lost.STORAGE, Lost.STORAGE_ENDED)


@dataclasses.dataclass(frozen=True)
class Probe:
    reachable: bool
    refused: bool = False
    detail: str = ""


async def probe(address: str) -> Probe:
    """One TCP connection to ``tcp://host:port`` (closed at once), without blocking the event loop. Other schemes
    are not probed (reported reachable)."""
    parts = urlsplit(address)
    if parts.scheme != "tcp" or parts.hostname is None or parts.port is None:
        return Probe(reachable=True)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port), timeout=_PROBE_TIMEOUT_SECONDS
        )
    except ConnectionRefusedError:
        return Probe(reachable=False, refused=True, detail="connection refused")
    except (OSError, asyncio.TimeoutError) as exc:
        return Probe(reachable=False, detail=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    writer.close()
    return Probe(reachable=True)


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime("%H:%M:%S UTC")


_WHAT = {
    Lost.SCHEDULER_ENDED: "the Scaler scheduler",
    Lost.SCHEDULER: "the Scaler scheduler",
    Lost.STORAGE: "Scaler's object storage server",
    Lost.STORAGE_ENDED: "Scaler's object storage server",
}
_STORAGE_CHECK = (
    "check that scaler_object_storage_server runs and that this host reaches it, and restart the scheduler with it "
    "(Scaler 2.9's scheduler does not reconnect to its object storage; docs/operations.md)"
)
_CHECK = {
    Lost.SCHEDULER_ENDED: "check that scaler_scheduler runs (its supervisor restarts it) and listens there",
    Lost.SCHEDULER: "check that scaler_scheduler runs and that this host reaches it (network, firewall)",
    Lost.STORAGE: _STORAGE_CHECK,
    Lost.STORAGE_ENDED: _STORAGE_CHECK,
}


class OutageLog:
    """One outage (from the first loss to the next session that gets the scheduler's answer), reported in one line
    when it starts and once more if it lasts; and the line when it ends."""

    def __init__(self, lasting_seconds: float = 30.0) -> None:
        self._lasting_seconds = lasting_seconds
        self._since: tuple[float, float] | None = None  # (wall, monotonic)
        self._reported_lasting = False

    @property
    def active(self) -> bool:
        return self._since is not None

    def lost(self, lost: Lost, address: str, cause: str, kept: tuple[int, int, float], grace_flag: str) -> None:
        """Log the outage line at the first loss, and again (``still``) once it has lasted."""
        now_wall, now = time.time(), time.monotonic()
        first = self._since is None
        if self._since is None:
            self._since = (now_wall, now)
        elif self._reported_lasting or now - self._since[1] < self._lasting_seconds:
            logger.info("adapter: %s at %s still unreachable (%s)", _WHAT[lost], address, cause)
            return
        else:
            self._reported_lasting = True
        jobs, tasks, grace_left = kept
        kept_text = (
            f"{jobs} job(s) with {tasks} task(s) kept until {_utc(now_wall + grace_left)} ({grace_flag}), then stopped"
            if tasks
            else "no job kept"
        )
        logger.warning("outage: %s at %s %s since %s (%s); %s; %s", _WHAT[lost], address,
                       "unreachable" if first else "still unreachable", _utc(self._since[0]), cause, kept_text,
                       _CHECK[lost])  # fmt: skip

    def recovered(self) -> None:
        if self._since is not None:
            logger.info("adapter: reconnected after an outage of %.1fs", time.monotonic() - self._since[1])
        self._since, self._reported_lasting = None, False
