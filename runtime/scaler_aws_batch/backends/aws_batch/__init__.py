"""The AWS Batch backend: jobs run as Batch jobs, payloads and results go through S3."""

from scaler_aws_batch.backends.aws_batch.settings import KIND

__all__ = ["KIND"]
