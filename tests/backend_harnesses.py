"""The e2e modules' harness fixture, one per backend: local processes, AWS Batch in the emulator, or Slurm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from harness import AwsHarness, Harness, LocalHarness, SlurmHarness

#: The ``params`` of a module-scoped ``harness`` fixture that runs its module on every backend.
BACKENDS = ["local", "aws-batch", "slurm"]


@contextlib.contextmanager
def started_harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The started harness of ``request.param`` (one of :data:`BACKENDS`), stopped at the end of the block."""
    chosen: LocalHarness | AwsHarness | SlurmHarness
    if request.param == "slurm":  # the cluster first: without Slurm this skips (fails on CI) before any work
        chosen = SlurmHarness(tmp_path_factory.mktemp("slurm"), request.getfixturevalue("slurm_cluster"))
    elif request.param == "local":
        chosen = LocalHarness(tmp_path_factory.mktemp("local"))
    else:
        chosen = AwsHarness(tmp_path_factory.mktemp("aws-batch"))
    with chosen.start() as started:
        yield started
