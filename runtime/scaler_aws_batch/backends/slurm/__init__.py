"""The Slurm backend: jobs run as Slurm batch jobs; payloads and results go through a shared store."""

from scaler_aws_batch.backends.slurm.settings import KIND

__all__ = ["KIND"]
