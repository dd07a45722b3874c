"""Every backend the worker can run, by name. Adding a backend is one line here and its own package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scaler_aws_batch.backends.aws_batch import KIND as AWS_BATCH
from scaler_aws_batch.backends.kind import BackendKind
from scaler_aws_batch.backends.local import KIND as LOCAL
from scaler_aws_batch.backends.slurm import KIND as SLURM

BACKEND_KINDS: Final[Mapping[str, BackendKind[Any]]] = {kind.name: kind for kind in (LOCAL, AWS_BATCH, SLURM)}
