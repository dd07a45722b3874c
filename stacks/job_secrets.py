"""Secrets by reference: environment variables each job gets from Secrets Manager or SSM Parameter Store.

Only the ARN travels: ECS resolves it when the container starts (the job definition's ``secrets``), using the job's
execution role, which may read exactly the referenced secrets and parameters and nothing else. The value never
appears in the template, the stack outputs, the payload or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_batch as batch
from aws_cdk import aws_iam as iam

from stacks.config import secret_resource_arn

SECRETS_MANAGER_READ = "secretsmanager:GetSecretValue"
PARAMETER_READ = "ssm:GetParameters"  # what ECS calls to resolve a parameter-store secret


class JobSecrets:
    """Adds ``name -> ARN`` entries to a job definition's container ``secrets`` and the matching grants.

    Several owners may add entries (the ``cdk.json`` ``job_secrets`` and any secret the stack itself creates); the
    container's list holds them all.
    """

    def __init__(self, job_definition: batch.EcsJobDefinition, execution_role: iam.IRole) -> None:
        self._references: dict[str, str] = {}
        self._role = execution_role
        resource = job_definition.node.default_child
        assert isinstance(resource, batch.CfnJobDefinition)
        self._resource = resource

    @property
    def references(self) -> Mapping[str, str]:
        return dict(self._references)

    def add(self, references: Mapping[str, str]) -> None:
        """Inject each ``name: arn`` (validated by the stack config) and let the execution role read that ARN."""
        clash = sorted(set(references) & set(self._references))
        if clash:
            raise ValueError(f"job secret(s) {', '.join(clash)} are defined twice: give each variable one source")
        self._references.update(references)
        # The override holds the whole list, so each call re-renders it; an empty mapping leaves the template as is.
        if self._references:
            self._resource.add_property_override(
                "ContainerProperties.Secrets",
                [{"Name": name, "ValueFrom": arn} for name, arn in sorted(self._references.items())],
            )
        secrets = sorted({secret_resource_arn(arn) for arn in references.values() if ":secretsmanager:" in arn})
        parameters = sorted({arn for arn in references.values() if ":ssm:" in arn})
        if secrets:
            self._role.add_to_principal_policy(iam.PolicyStatement(actions=[SECRETS_MANAGER_READ], resources=secrets))
        if parameters:
            self._role.add_to_principal_policy(iam.PolicyStatement(actions=[PARAMETER_READ], resources=parameters))
