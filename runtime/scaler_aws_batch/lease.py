"""The adapter id's lease: at most one live adapter acts as the owner of an adapter id (its jobs, by name prefix).

The lease is a small JSON object ``leases/<adapter id>`` in the adapter's store (never unpickled): who holds it
(an instance uuid, host, pid, start time) and a renewal counter. It is taken with a create-only write, renewed every
third of its time to live with a write conditioned on the version last written (S3 ETag, a content digest in a
directory), and deleted at a clean exit. A holder is *dead* when it ran on this host and its pid is gone (a restart on
the same host takes over at once), or when its lease did not change for a whole time to live while watched (no
clock is compared, so hosts' clocks may disagree).

With the default adapter id, an adapter takes the first free *slot*: slot 0 is the id of earlier versions (existing
deployments keep re-attaching), slot k a hash of the same inputs and k. Two adapters started the same way thus get
distinct ids, and neither ever takes stock of (and stops) the other's jobs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from scaler_aws_batch.errors import ObjectMissingError
from scaler_aws_batch.stores.base import ObjectStore

logger = logging.getLogger(__name__)

LEASES_PREFIX = "leases/"
#: Slots tried for a default adapter id before giving up (that many adapters of one deployment at once).
MAX_SLOTS = 64


class AdapterIdHeldError(Exception):
    """An explicit adapter id is held by another live adapter."""


class LeaseInterrupted(Exception):
    """Stopped (SIGTERM/SIGINT) while waiting to learn whether a holder is alive."""


def lease_key(adapter_id: str) -> str:
    return f"{LEASES_PREFIX}{adapter_id}"


def slot_ids(slot_zero: str, inputs: Sequence[str], chars: int) -> Iterator[str]:
    """The default id's slots: ``slot_zero`` first, then a hash of ``inputs`` and k, cut to the same length (so that
    no id is a prefix of another and a job-name prefix never matches another slot's jobs)."""
    yield slot_zero
    for slot in range(1, MAX_SLOTS):
        yield hashlib.sha256("\n".join((*inputs, f"slot {slot}")).encode()).hexdigest()[:chars]


@dataclasses.dataclass(frozen=True)
class Holder:
    instance: str
    hostname: str
    pid: int
    started: float  # wall clock, informative only: liveness never compares clocks
    renewals: int = 0

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(data: bytes) -> Holder | None:
        """None when the object is not a lease this code wrote (then only its silence can tell it is dead)."""
        try:
            fields = json.loads(data)
            return Holder(str(fields["instance"]), str(fields["hostname"]), int(fields["pid"]),
                          float(fields["started"]), int(fields["renewals"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return f"host {self.hostname} (pid {self.pid})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as exc:  # EPERM: it exists, owned by someone else
        return exc.errno == errno.EPERM
    return True


@dataclasses.dataclass
class Lease:
    """A held lease. ``took_over``: it was taken from a dead holder, whose last SubmitJob may still land."""

    store: ObjectStore
    adapter_id: str
    holder: Holder
    tag: str
    took_over: bool = False

    def renew(self) -> bool:
        """Blocking: write the next renewal. False when the lease is no longer ours (another adapter took it over).
        Store errors (an outage) propagate: the caller tries again at the next renewal."""
        renewed = dataclasses.replace(self.holder, renewals=self.holder.renewals + 1)
        tag = self.store.replace_tagged(lease_key(self.adapter_id), renewed.encode(), self.tag)
        if tag is None:  # changed: by someone else, or by our own write whose answer was lost
            try:
                data, tag = self.store.read_tagged(lease_key(self.adapter_id))
            except ObjectMissingError:
                return False
            if Holder.decode(data) != renewed:
                return False
        self.holder, self.tag = renewed, tag
        return True

    def release(self) -> None:
        """Blocking: delete the lease if it is still ours, so that the next adapter with this id takes it at once."""
        try:
            data, _ = self.store.read_tagged(lease_key(self.adapter_id))
        except ObjectMissingError:
            return
        held = Holder.decode(data)
        if held is not None and held.instance == self.holder.instance:
            self.store.delete(lease_key(self.adapter_id))


@dataclasses.dataclass
class LeaseTaker:
    """Takes the lease of the first free candidate id (blocking; start-up only)."""

    store: ObjectStore
    ttl_seconds: float
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    hostname: str = dataclasses.field(default_factory=socket.gethostname)
    pid: int = dataclasses.field(default_factory=os.getpid)
    is_alive: Callable[[int], bool] = pid_alive
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.me = Holder(uuid.uuid4().hex, self.hostname, self.pid, time.time())

    def take(self, candidates: Sequence[str] | Iterator[str], *, explicit: bool) -> Lease:
        """The lease of the first candidate that is free or whose holder is dead. ``explicit`` (one id the user
        named): a live holder is an :class:`AdapterIdHeldError`."""
        held: list[tuple[str, Holder | None]] = []
        for adapter_id in candidates:
            lease, holder = self._try(adapter_id)
            if lease is not None:
                for other_id, other in held:
                    logger.warning(
                        "adapter id %s is held by a live adapter on %s; this adapter takes id %s (it leaves that "
                        "adapter's jobs alone)", other_id, _where(other), adapter_id,
                    )  # fmt: skip
                return lease
            if explicit:
                raise AdapterIdHeldError(
                    f"adapter id {adapter_id} is held by a live adapter on {_where(holder)}: two adapters must not "
                    "own the same jobs. Stop the other adapter, or give this one another --adapter-id (or none, to "
                    "get a free one)."
                )
            held.append((adapter_id, holder))
        raise AdapterIdHeldError(f"every one of {len(held)} adapter ids of this deployment is held by a live adapter")

    def _try(self, adapter_id: str) -> tuple[Lease | None, Holder | None]:
        """This id's lease, or None and its live holder."""
        key = lease_key(adapter_id)
        while True:
            tag = self.store.create_tagged(key, self.me.encode())
            if tag is not None:
                return Lease(self.store, adapter_id, self.me, tag), None
            try:
                data, tag = self.store.read_tagged(key)
            except ObjectMissingError:
                continue  # released meanwhile: try creating it again
            holder = Holder.decode(data)
            # Same host: its pid gone, or its pid is ours (a restarted container's PID 1 in the same pod): dead.
            dead = (
                holder is not None
                and holder.hostname == self.hostname
                and (holder.pid == self.pid or not self.is_alive(holder.pid))
            )
            if not dead:
                seen = self._watch(key, tag)
                if seen == "renewed":
                    return None, holder
                if seen == "gone":
                    continue
            new_tag = self.store.replace_tagged(key, self.me.encode(), tag)
            if new_tag is not None:
                logger.info("adapter id %s: took over the lease of a dead adapter on %s", adapter_id, _where(holder))
                return Lease(self.store, adapter_id, self.me, new_tag, took_over=True), None
            # Someone else changed it first (a renewal, or another adapter taking over): look again.

    def _watch(self, key: str, tag: str) -> str:
        """Watch the lease for one time to live: "renewed" as soon as it changes, "gone" when it is deleted, "silent"
        when it stayed the same all along (its holder is dead)."""
        deadline = self.clock() + self.ttl_seconds
        interval = max(0.05, self.ttl_seconds / 20)
        while self.clock() < deadline:
            if self.stop.wait(interval):
                raise LeaseInterrupted
            try:
                _, now_tag = self.store.read_tagged(key)
            except ObjectMissingError:
                return "gone"
            if now_tag != tag:
                return "renewed"
        return "silent"


def _where(holder: Holder | None) -> str:
    return holder.describe() if holder is not None else "an unknown host"
