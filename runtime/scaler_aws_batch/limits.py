"""AWS Batch limits the runtime must respect (docs/aws-limits.md gives their public sources).

One place, so code and docs agree."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

#: Container overrides, JSON formatting included, after ``Ref::`` substitution. Above it a job FAILS AT START.
MAX_CONTAINER_OVERRIDES_CHARS = 8_192
#: Headroom kept under the overrides limit, because AWS does not publish exactly how it serializes overrides.
OVERRIDES_SAFETY_MARGIN_CHARS = 128
#: A SubmitJob request body.
MAX_SUBMIT_REQUEST_BYTES = 30 * 1024
#: Ids per DescribeJobs call.
MAX_DESCRIBE_IDS = 100
#: Array job sizes.
MIN_ARRAY_SIZE = 2
MAX_ARRAY_SIZE = 10_000
#: ``timeout.attemptDurationSeconds``.
MIN_TIMEOUT_SECONDS = 60
#: Job names: 1-128 characters.
MAX_JOB_NAME_LENGTH = 128


def render_command(template: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """Substitute ``Ref::name`` arguments the way AWS Batch does: whole arguments only, unknown refs left as-is."""
    rendered: list[str] = []
    for argument in template:
        if argument.startswith("Ref::") and argument[len("Ref::") :] in parameters:
            rendered.append(parameters[argument[len("Ref::") :]])
        else:
            rendered.append(argument)
    return rendered


def container_overrides_length(
    command: Sequence[str],
    environment: Mapping[str, str] | None = None,
    resource_requirements: Sequence[Mapping[str, str]] = (),
) -> int:
    """Characters of the container overrides as AWS counts them: compact JSON of command, environment, resources."""
    overrides = {
        "command": list(command),
        "environment": [{"name": key, "value": value} for key, value in (environment or {}).items()],
        "resourceRequirements": [dict(item) for item in resource_requirements],
    }
    return len(json.dumps(overrides, separators=(",", ":")))
