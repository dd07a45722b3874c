"""Run OpenGRIS Scaler tasks on AWS Batch, or on local processes, through a pass-through Scaler worker adapter.

Client-side helpers live here so user code needs one import::

    from scaler_aws_batch import submit_command
"""

from scaler_aws_batch.commands import CommandResult, ShellCommand, submit_command

__all__ = ["CommandResult", "ShellCommand", "submit_command"]
__version__ = "0.1.0"
