"""Every backend the worker can run, by name. Adding a backend is one line here and its own package."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from scaler_aws_batch.backends.aws_batch import KIND as AWS_BATCH
from scaler_aws_batch.backends.kind import BackendKind
from scaler_aws_batch.backends.local import KIND as LOCAL

BACKEND_KINDS: Final[Mapping[str, BackendKind]] = {kind.name: kind for kind in (LOCAL, AWS_BATCH)}
DEFAULT_BACKEND: Final = LOCAL.name
