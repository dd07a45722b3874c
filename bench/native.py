"""The ceiling: Scaler with its own native local workers (two, one per core), no Batch at all."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

from scaler import Client
from scaler.cluster.combo import SchedulerClusterCombo

from bench.common import READY_TIMEOUT_SECONDS, Cluster, stdout_to

NAME = "native"
WORKERS = 2


@contextlib.contextmanager
def cluster(work_dir: pathlib.Path) -> Iterator[Cluster]:
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "combo.log"
    with stdout_to(log):  # its worker processes log to stdout whatever logging_paths says
        combo = SchedulerClusterCombo(n_workers=WORKERS, logging_paths=(str(log),), logging_level="WARNING")
    try:
        with Client(address=combo.get_address()) as client:
            if client.submit(abs, -1).result(timeout=READY_TIMEOUT_SECONDS) != 1:
                raise RuntimeError(f"{NAME}: the workers answered the probe task wrongly")
            yield Cluster(NAME, client, None, None, [log])
    finally:
        combo.shutdown()
