"""The adapter id's lease against both stores: a directory, and S3 (the Batch emulator's moto server, which honours
PutObject's IfNoneMatch/IfMatch)."""

from __future__ import annotations

import logging
import pathlib
import threading
import uuid
from collections.abc import Iterator

import pytest

from batch_emulator import BatchEmulator
from scaler_aws_batch.lease import AdapterIdHeldError, Holder, Lease, LeaseTaker, lease_key, slot_ids
from scaler_aws_batch.reattach import ADAPTER_ID_CHARS, default_adapter_id
from scaler_aws_batch.stores.base import ObjectStore
from scaler_aws_batch.stores.local import LocalDirectoryStore
from scaler_aws_batch.stores.s3 import S3Store, s3_client_config, s3_session

BUCKET = "lease-test"
TTL = 1.0  # short, so that watching a silent lease ends soon; a live holder renews well within it
HOST = "this-host"


@pytest.fixture(scope="module")
def s3_emulator() -> Iterator[BatchEmulator]:
    with BatchEmulator() as emulator:
        emulator.client("s3").create_bucket(Bucket=BUCKET)
        yield emulator


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> ObjectStore:
    if request.param == "directory":
        return LocalDirectoryStore(tmp_path / "store")
    emulator: BatchEmulator = request.getfixturevalue("s3_emulator")
    session = s3_session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=emulator.region)
    client = session.client("s3", endpoint_url=emulator.endpoint_url, config=s3_client_config())
    return S3Store(BUCKET, f"p-{uuid.uuid4().hex[:8]}", client=client)


def taker(store: ObjectStore, pid: int, *, host: str = HOST, alive: frozenset[int] = frozenset()) -> LeaseTaker:
    """An adapter with ``pid`` on ``host``; the pids in ``alive`` are the processes of this host that exist."""
    return LeaseTaker(store, TTL, hostname=host, pid=pid, is_alive=alive.__contains__)


class Renewing:
    """A live holder: renews its lease in a thread, as the adapter does."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(TTL / 5):
            self.lease.renew()

    def __enter__(self) -> Lease:
        self.thread.start()
        return self.lease

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


SLOTS = ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc")


def test_a_free_id_is_taken_and_released(store: ObjectStore) -> None:
    lease = taker(store, 100).take(iter(SLOTS), explicit=False)
    assert (lease.adapter_id, lease.took_over) == (SLOTS[0], False)
    assert Holder.decode(store.get(lease_key(SLOTS[0]))) == lease.holder
    assert lease.renew() and lease.renew()
    assert lease.holder.renewals == 2
    lease.release()
    assert not store.exists(lease_key(SLOTS[0]))
    again = taker(store, 101).take(iter(SLOTS), explicit=False)  # released: taken at once, nothing to take over
    assert (again.adapter_id, again.took_over) == (SLOTS[0], False)


def test_a_live_holder_sends_the_next_adapter_to_the_next_slot_and_it_says_so(
    store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = taker(store, 100).take(iter(SLOTS), explicit=False)
    with Renewing(first), caplog.at_level(logging.WARNING, logger="scaler_aws_batch.lease"):
        second = taker(store, 200, alive=frozenset({100})).take(iter(SLOTS), explicit=False)
    assert (second.adapter_id, second.took_over) == (SLOTS[1], False)
    assert first.renew(), "the first adapter still holds its id"
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        f"adapter id {SLOTS[0]} is held by a live adapter on host {HOST} (pid 100); this adapter takes id {SLOTS[1]} "
        "(it leaves that adapter's jobs alone)"
    ]


def test_a_dead_holder_on_the_same_host_is_taken_over_at_once(store: ObjectStore) -> None:
    dead = taker(store, 100).take(iter(SLOTS), explicit=False)
    # No renewal at all: only the pid tells it is dead (watching would also see it, a TTL later).
    restarted = taker(store, 300, alive=frozenset()).take(iter(SLOTS), explicit=False)
    assert (restarted.adapter_id, restarted.took_over) == (SLOTS[0], True)
    assert not dead.renew(), "the dead adapter's lease is no longer its own"


def test_a_holder_with_our_own_pid_on_our_host_is_an_earlier_process_taken_over_at_once(store: ObjectStore) -> None:
    """A container restarted in the same pod: the same host name, and PID 1 again (alive: it is this process)."""
    earlier = taker(store, 1).take(iter(SLOTS), explicit=False)
    restarting = taker(store, 1, alive=frozenset({1}))
    restarting.stop.set()  # watching the lease would raise LeaseInterrupted: it must be taken without a watch
    restarted = restarting.take(iter(SLOTS), explicit=False)
    assert (restarted.adapter_id, restarted.took_over) == (SLOTS[0], True)
    assert not earlier.renew()


def test_a_lease_silent_for_a_ttl_is_taken_over_from_another_host(store: ObjectStore) -> None:
    elsewhere = taker(store, 100, host="other-host").take(iter(SLOTS), explicit=False)
    lease = taker(store, 100, alive=frozenset({100})).take(iter(SLOTS), explicit=False)
    assert (lease.adapter_id, lease.took_over) == (SLOTS[0], True)
    assert not elsewhere.renew()


def test_an_explicit_id_held_by_a_live_adapter_is_refused(store: ObjectStore) -> None:
    first = taker(store, 100, host="host-a").take(iter(["mine"]), explicit=True)
    with Renewing(first), pytest.raises(AdapterIdHeldError) as refused:
        taker(store, 200).take(iter(["mine"]), explicit=True)
    assert "adapter id mine is held by a live adapter on host host-a (pid 100)" in str(refused.value)
    assert "Stop the other adapter, or give this one another --adapter-id" in str(refused.value)
    assert first.renew()


def test_a_lease_taken_over_while_its_holder_was_cut_off_is_lost(store: ObjectStore) -> None:
    paused = taker(store, 100).take(iter(SLOTS), explicit=False)
    successor = taker(store, 200).take(iter(SLOTS), explicit=False)  # pid 100 looks gone: taken over
    assert successor.took_over
    assert not paused.renew()
    paused.release()  # not its own any more: left alone
    assert Holder.decode(store.get(lease_key(SLOTS[0]))) == successor.holder
    assert successor.renew()


def test_default_id_slots_start_with_the_former_default_and_never_prefix_each_other() -> None:
    inputs = ("tcp://127.0.0.1:2345", "aws-batch", "queue-1", "")
    zero = default_adapter_id(scheduler=inputs[0], backend=inputs[1], queue=inputs[2], name=inputs[3])
    ids = list(slot_ids(zero, inputs, ADAPTER_ID_CHARS))
    assert ids[0] == zero
    assert len(set(ids)) == len(ids) and {len(adapter_id) for adapter_id in ids} == {ADAPTER_ID_CHARS}
    assert ids == list(slot_ids(zero, inputs, ADAPTER_ID_CHARS)), "the same inputs give the same slots"
