"""User tags on jobs: checked once, at start-up, against the rules AWS Batch enforces at SubmitJob.

Tags come from the stack (``cdk.json`` ``job_tags``) and from the worker (``--tag KEY=VALUE``); the adapter adds
its own (:class:`~scaler_aws_batch.contracts.JobTag`). AWS refuses a job with more than 50 tags, so the total is
checked before the first job, with an error that says which tags to drop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from scaler_aws_batch.contracts import ADAPTER_TAG_BUDGET, MAX_JOB_TAGS, JobTag

MAX_KEY_CHARS: Final = 128
MAX_VALUE_CHARS: Final = 256
#: Letters, digits, spaces and ``_ . : / = + - @`` (the AWS tagging rules).
_ALLOWED: Final = re.compile(r"^[\w .:/=+\-@]*$", re.UNICODE)
#: How many user tags a job may carry: AWS's limit less what the adapter keeps for its own keys.
MAX_USER_TAGS: Final = MAX_JOB_TAGS - ADAPTER_TAG_BUDGET


def parse_tag_pairs(pairs: Sequence[str], *, flag: str = "--tag") -> dict[str, str]:
    """``["team=ml", "project=x"]`` -> ``{"team": "ml", "project": "x"}``; ValueError naming the bad pair."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
        tags[key.strip()] = value.strip()
    return tags


def check_user_tags(tags: Mapping[str, str], *, source: str) -> None:
    """Raise ValueError (naming ``source``, e.g. ``--tag`` or ``cdk.json job_tags``) for a tag AWS would refuse, a
    key reserved for the adapter, or more tags than fit next to the adapter's own."""
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_KEY_CHARS or not _ALLOWED.match(key):
            raise ValueError(
                f"{source}: tag key {key!r} must be 1 to {MAX_KEY_CHARS} letters, digits, spaces or _ . : / = + - @"
            )
        if key.lower().startswith("aws:"):
            raise ValueError(f"{source}: tag key {key!r} starts with 'aws:', which AWS reserves for itself")
        if key.startswith(JobTag.PREFIX):
            raise ValueError(f"{source}: tag key {key!r} starts with {JobTag.PREFIX!r}, which the adapter reserves")
        if len(value) > MAX_VALUE_CHARS or not _ALLOWED.match(value):
            raise ValueError(
                f"{source}: the value of tag {key!r} must be at most {MAX_VALUE_CHARS} letters, digits, spaces or"
                " _ . : / = + - @"
            )
    if len(tags) > MAX_USER_TAGS:
        raise ValueError(
            f"{source}: {len(tags)} user tags, but a job carries at most {MAX_JOB_TAGS} tags and the adapter keeps"
            f" {ADAPTER_TAG_BUDGET} for its own: drop {len(tags) - MAX_USER_TAGS} of them ({', '.join(sorted(tags))})"
        )


def merge_user_tags(stack_tags: Mapping[str, str], worker_tags: Mapping[str, str]) -> dict[str, str]:
    """The stack's tags overridden by the worker's, checked together (the limit applies to what a job carries)."""
    check_user_tags(stack_tags, source="the stack's job_tags (cdk.json)")
    check_user_tags(worker_tags, source="--tag")
    merged = {**stack_tags, **worker_tags}
    check_user_tags(merged, source="cdk.json job_tags and --tag together")
    return merged
