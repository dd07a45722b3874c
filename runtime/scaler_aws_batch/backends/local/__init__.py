"""The local backend: jobs run as processes on this machine."""

from scaler_aws_batch.backends.local.settings import KIND

__all__ = ["KIND"]
