"""The secret that holds the key signing payloads and results (see runtime/scaler_aws_batch/signing.py)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from scaler_aws_batch.signing import GENERATED_KEY_CHARS


class SigningSecret(Construct):
    """A Secrets Manager secret with a generated random value: letters and digits only, so it is one key of the
    whitespace-separated key ring the runtime reads. Read by the job role and the adapter policy, nobody else."""

    secret: secretsmanager.Secret

    def __init__(self, scope: Construct, construct_id: str, *, destroy_on_delete: bool) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="Scaler Batch: HMAC key ring that signs task payloads and results (signing key first)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=GENERATED_KEY_CHARS, exclude_punctuation=True, include_space=False
            ),
            removal_policy=RemovalPolicy.DESTROY if destroy_on_delete else RemovalPolicy.RETAIN,
        )
