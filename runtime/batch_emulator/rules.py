"""AWS Batch validation rules and limits, as pure functions (no I/O).

Messages marked "exact" are AWS's own text (see docs/architecture.md); the others are close paraphrases, since
callers should branch on the error code (ClientException), not on the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from scaler_aws_batch import fargate
from scaler_aws_batch.contracts import StatusReason

SUBMIT_JOB_MAX_BYTES = 30 * 1024
CONTAINER_OVERRIDES_MAX_CHARS = 8192
DESCRIBE_JOBS_MAX_IDS = 100
BULK_JOBS_MAX_IDS = 50
JOB_DEFINITION_MAX_BYTES = 24 * 1024
ARRAY_SIZE_MIN = 2
ARRAY_SIZE_MAX = 10_000
MIN_ATTEMPT_DURATION_SECONDS = 60
RETRY_ATTEMPTS_MIN = 1
RETRY_ATTEMPTS_MAX = 10
EVALUATE_ON_EXIT_MAX = 5
PATTERN_MAX_CHARS = 512
AWS_KILL_GRACE_SECONDS = 30.0

MSG_JOB_TOO_BIG = "Job size must be less than 30 KiB"  # exact
MSG_OVERRIDES_TOO_LONG = StatusReason.OVERRIDES_TOO_LONG  # exact
MSG_TOO_MANY_IDS = "Maximum number of jobs supported is 100"  # exact (AWS wraps it in "Error executing request")
MSG_TIMEOUT = StatusReason.TIMEOUT  # exact
MSG_ESSENTIAL_EXITED = StatusReason.ESSENTIAL_CONTAINER_EXITED  # exact (AWS's statusReason for a non-zero exit)
SPOT_INSTANCE_ID = "i-0123456789abcdef0"
MSG_SPOT = f"{StatusReason.SPOT_RECLAIM_PREFIX} (instance {SPOT_INSTANCE_ID}) terminated."  # exact shape
MSG_FARGATE_SPOT = f"{StatusReason.FARGATE_SPOT_INTERRUPTED_PREFIX}."  # exact (ECS's stoppedReason, see docs/deploy.md)
FARGATE = "FARGATE"
MSG_TOO_MANY_REQUESTS = "Too Many Requests"  # exact

_JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_REASON_PATTERN_RE = re.compile(r"^[A-Za-z0-9.: \t]*\*?$")
_EXIT_CODE_PATTERN_RE = re.compile(r"^[0-9]*\*?$")
_REF_RE = re.compile(r"^Ref::(.+)$")


class BatchApiError(Exception):
    """An error answered in AWS's REST-JSON error shape: HTTP status, `x-amzn-ErrorType` and `{"__type", "message"}`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def client_error(message: str) -> BatchApiError:
    return BatchApiError("ClientException", message, 400)


def validate_job_name(name: object) -> str:
    if not isinstance(name, str) or not _JOB_NAME_RE.match(name):
        raise client_error(
            f"Job name {name!r} is not valid: it must be 1-128 characters, start with a letter or a number, "
            "and contain only letters, numbers, hyphens (-) and underscores (_)"
        )
    return name


def validate_array_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or not ARRAY_SIZE_MIN <= size <= ARRAY_SIZE_MAX:
        raise client_error(f"Array Job size must be between {ARRAY_SIZE_MIN} and {ARRAY_SIZE_MAX}, got {size!r}")
    return size


def validate_timeout(timeout: Mapping[str, Any] | None) -> int | None:
    """The attempt duration in seconds, or None; AWS rejects values under 60."""
    if not timeout:
        return None
    seconds = timeout.get("attemptDurationSeconds")
    if seconds is None:
        return None
    if not isinstance(seconds, int) or seconds < MIN_ATTEMPT_DURATION_SECONDS:
        raise client_error(
            f"timeout.attemptDurationSeconds must be at least {MIN_ATTEMPT_DURATION_SECONDS} seconds, got {seconds!r}"
        )
    return seconds


def validate_retry_strategy(strategy: Mapping[str, Any] | None) -> None:
    if not strategy:
        return
    attempts = strategy.get("attempts")
    entries = strategy.get("evaluateOnExit")
    if attempts is None and entries:
        raise client_error("retryStrategy.attempts must be specified when evaluateOnExit is specified")
    if attempts is not None and (
        not isinstance(attempts, int) or not RETRY_ATTEMPTS_MIN <= attempts <= RETRY_ATTEMPTS_MAX
    ):
        raise client_error(
            f"retryStrategy.attempts must be between {RETRY_ATTEMPTS_MIN} and {RETRY_ATTEMPTS_MAX}, got {attempts!r}"
        )
    if entries is None:
        return
    if not isinstance(entries, list) or len(entries) > EVALUATE_ON_EXIT_MAX:
        raise client_error(f"retryStrategy.evaluateOnExit can have at most {EVALUATE_ON_EXIT_MAX} entries")
    for entry in entries:
        if not isinstance(entry, dict):
            raise client_error("retryStrategy.evaluateOnExit entries must be objects")
        action = entry.get("action")
        if not isinstance(action, str) or action.upper() not in ("RETRY", "EXIT"):
            raise client_error(f"evaluateOnExit action must be RETRY or EXIT, got {action!r}")
        for key, regex in (
            ("onStatusReason", _REASON_PATTERN_RE),
            ("onReason", _REASON_PATTERN_RE),
            ("onExitCode", _EXIT_CODE_PATTERN_RE),
        ):
            pattern = entry.get(key)
            if pattern is None:
                continue
            if not isinstance(pattern, str) or len(pattern) > PATTERN_MAX_CHARS or not regex.match(pattern):
                raise client_error(
                    f"evaluateOnExit.{key} {pattern!r} is not valid: up to {PATTERN_MAX_CHARS} characters of "
                    + ("digits" if key == "onExitCode" else "letters, numbers, periods, colons and white space")
                    + ", optionally ending with *"
                )


def is_fargate(job_definition: Mapping[str, Any]) -> bool:
    return FARGATE in (job_definition.get("platformCapabilities") or [])


def validate_fargate_resources(resources: Sequence[Mapping[str, Any]]) -> None:
    """Refuse what Fargate cannot run: a vCPU/memory pair outside its combinations, or a GPU (scaler_aws_batch.fargate
    holds AWS's table)."""
    values = {str(item.get("type")): str(item.get("value")) for item in resources}
    try:
        vcpus = float(values.get("VCPU", "0"))
        memory = int(values.get("MEMORY", "0"))
        gpus = int(values.get("GPU", "0"))
    except ValueError as exc:
        raise client_error(f"resourceRequirements values must be numbers: {values}") from exc
    problem = fargate.check(vcpus, memory, gpus=gpus)
    if problem is not None:
        raise client_error(f"Fargate resource requirements are not valid: {problem}")


def glob_match(pattern: str, value: str) -> bool:
    """AWS's evaluateOnExit matching: exact, or a prefix match when the pattern ends with `*`."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def should_retry(
    strategy: Mapping[str, Any] | None,
    attempt: int,
    status_reason: str | None,
    reason: str | None,
    exit_code: int | None,
) -> bool:
    """Whether a failed attempt is retried.

    Retried only while attempts remain; then the first evaluateOnExit entry whose given conditions all match decides;
    no entry matching means RETRY. An absent reason is matched as the empty string (so `*` matches it); an absent
    exit code matches no onExitCode pattern.
    """
    attempts = int((strategy or {}).get("attempts") or 1)
    if attempt >= attempts:
        return False
    for entry in (strategy or {}).get("evaluateOnExit") or []:
        conditions: list[bool] = []
        if entry.get("onStatusReason") is not None:
            conditions.append(glob_match(entry["onStatusReason"], status_reason or ""))
        if entry.get("onReason") is not None:
            conditions.append(glob_match(entry["onReason"], reason or ""))
        if entry.get("onExitCode") is not None:
            conditions.append(exit_code is not None and glob_match(entry["onExitCode"], str(exit_code)))
        if all(conditions):
            return str(entry["action"]).upper() == "RETRY"
    return True


def substitute_parameters(command: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """Replace each command element that is exactly `Ref::name` by the parameter's value.

    A placeholder without a value is passed through literally (`Ref::name`), as the ECS agent does. Placeholders
    embedded inside a longer element are not substituted.
    """
    result: list[str] = []
    for element in command:
        match = _REF_RE.match(element)
        if match and match.group(1) in parameters:
            result.append(parameters[match.group(1)])
        else:
            result.append(element)
    return result


def container_overrides_length(
    command: Sequence[str],
    environment_overrides: Sequence[Mapping[str, Any]] | None,
    resource_overrides: Sequence[Mapping[str, Any]] | None,
) -> int:
    """Characters of the container overrides Batch hands to ECS: the command after Ref:: substitution plus the
    environment and resource-requirement overrides, as compact JSON."""
    overrides: dict[str, Any] = {"command": list(command)}
    if environment_overrides:
        overrides["environment"] = [dict(e) for e in environment_overrides]
    if resource_overrides:
        overrides["resourceRequirements"] = [dict(r) for r in resource_overrides]
    return len(json.dumps(overrides, separators=(",", ":")))


def name_glob_match(pattern: str, value: str, *, case_insensitive: bool) -> bool:
    """ListJobs filter matching: exact, or a prefix match when the value ends with `*`."""
    if case_insensitive:
        pattern, value = pattern.lower(), value.lower()
    return glob_match(pattern, value)
