"""The job-definition reader: what the backend needs of its job definition (command, default parameters and sizes,
platform, environment names), read once through the call layer, and the Fargate size check it allows."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import botocore.exceptions

from scaler_aws_batch import fargate
from scaler_aws_batch.aws_calls import AwsCalls, error_code
from scaler_aws_batch.aws_clients import BatchClients
from scaler_aws_batch.backends.base import JobSpec
from scaler_aws_batch.errors import JobRejectedError

if TYPE_CHECKING:
    from mypy_boto3_batch.type_defs import JobDefinitionTypeDef

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobDefinitionInfo:
    command: tuple[str, ...]
    default_parameters: Mapping[str, str]
    status: str = "ACTIVE"
    environment_names: frozenset[str] = frozenset()
    #: Fargate job definitions accept only Fargate's vCPU/memory combinations and no GPUs.
    fargate: bool = False
    default_vcpus: float | None = None
    default_memory_mib: int | None = None

    def check_platform(self, spec: JobSpec) -> None:
        """Refuse, before SubmitJob, a size a Fargate job definition cannot run (AWS would fail the job later)."""
        if not self.fargate:
            return
        vcpus = spec.resources.vcpus if spec.resources.vcpus is not None else self.default_vcpus
        memory = spec.resources.memory_mib if spec.resources.memory_mib is not None else self.default_memory_mib
        problem = fargate.check(vcpus or 0.0, memory or 0, gpus=spec.resources.gpus or 0)
        if problem is not None:
            raise JobRejectedError(f"job {spec.name!r}: {problem}")


class JobDefinitionReader:
    """Reads the job definition on first use, then answers from memory (thread-safe)."""

    def __init__(self, calls: AwsCalls, clients: BatchClients, reference: str) -> None:
        self._calls, self._clients, self._reference = calls, clients, reference
        self._lock = threading.Lock()
        self._info: JobDefinitionInfo | None = None

    def get(self) -> JobDefinitionInfo:
        with self._lock:
            if self._info is None:
                self._info = self._read()
            return self._info

    def _describe(self) -> list[JobDefinitionTypeDef]:
        reference = self._reference
        # An ARN goes in ``jobDefinitions``. A name is looked up with ``jobDefinitionName`` (paginated): a bare name
        # means the latest ACTIVE revision, as SubmitJob does; "name:revision" picks that revision.
        definitions: list[JobDefinitionTypeDef] = []
        if reference.startswith("arn:"):
            page = self._calls.call(
                "DescribeJobDefinitions",
                lambda: self._clients.batch.describe_job_definitions(jobDefinitions=[reference]),
            )
            return list(page.get("jobDefinitions", []))
        name, _, revision = reference.partition(":")
        kwargs: dict[str, Any] = {"jobDefinitionName": name}
        if not revision:
            kwargs["status"] = "ACTIVE"
        while True:
            page = self._calls.call(
                "DescribeJobDefinitions", lambda: self._clients.batch.describe_job_definitions(**kwargs)
            )
            definitions.extend(page.get("jobDefinitions", []))
            next_token = page.get("nextToken")
            if not next_token:
                break
            kwargs["nextToken"] = next_token
        if revision:
            definitions = [item for item in definitions if str(item.get("revision")) == revision]
        return definitions

    def _read(self) -> JobDefinitionInfo:
        reference = self._reference
        try:
            definitions = self._describe()
        except botocore.exceptions.ClientError as exc:
            raise JobRejectedError(
                f"cannot read job definition {reference!r} ({error_code(exc)}); check --job-definition"
            ) from exc
        if not definitions:
            raise JobRejectedError(
                f"job definition {reference!r} does not exist or is not ACTIVE; check --job-definition"
            )
        definition = max(definitions, key=lambda item: item.get("revision", 0))
        command = tuple(definition.get("containerProperties", {}).get("command", []))
        if not command:
            raise JobRejectedError(
                f"job definition {reference!r} has no container command; it must run the scaler-batch runner"
            )
        logger.debug("job definition %s revision %s: %d command parts", definition.get("jobDefinitionName"),
                     definition.get("revision"), len(command))  # fmt: skip
        container = definition.get("containerProperties", {})
        defaults = {item["type"]: item["value"] for item in container.get("resourceRequirements", [])}
        vcpus = defaults.get("VCPU", container.get("vcpus"))
        memory = defaults.get("MEMORY", container.get("memory"))
        return JobDefinitionInfo(
            command=command,
            default_parameters=dict(definition.get("parameters", {})),
            fargate="FARGATE" in definition.get("platformCapabilities", []),
            default_vcpus=float(vcpus) if vcpus is not None else None,
            default_memory_mib=int(memory) if memory is not None else None,
            status=str(definition.get("status", "ACTIVE")),
            environment_names=frozenset(str(item.get("name")) for item in container.get("environment", [])),
        )
