"""The e2e modules' harness fixture, one per backend: local processes, AWS Batch in the emulator, or Slurm; and
AWS Batch once more with every job in the job image built from the CDK asset. The development venv has what the
image may lack, so only that last one proves what AWS would run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from harness import AwsHarness, Harness, ImageHarness, LocalHarness, SlurmHarness

#: The ``params`` of a module-scoped ``harness`` fixture that runs its module on every backend.
BACKENDS = ["local", "aws-batch", "slurm", "aws-batch-image"]


@contextlib.contextmanager
def started_harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The started harness of ``request.param`` (one of :data:`BACKENDS`), stopped at the end of the block."""
    chosen: LocalHarness | AwsHarness | SlurmHarness
    if request.param == "slurm":  # the cluster first: without Slurm this skips (fails on CI) before any work
        chosen = SlurmHarness(tmp_path_factory.mktemp("slurm"), request.getfixturevalue("slurm_cluster"))
    elif request.param == "aws-batch-image":  # the image first: without podman this skips (fails on CI)
        image = request.getfixturevalue("job_image")
        chosen = ImageHarness(tmp_path_factory.mktemp("aws-batch-image"), image, tmp_path_factory.getbasetemp())
    elif request.param == "local":
        chosen = LocalHarness(tmp_path_factory.mktemp("local"))
    else:
        chosen = AwsHarness(tmp_path_factory.mktemp("aws-batch"))
    with chosen.start() as started:
        yield started
