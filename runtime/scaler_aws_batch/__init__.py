"""Run OpenGRIS Scaler tasks on AWS Batch, or on local processes, through a pass-through Scaler worker adapter.

Client-side helpers live here so user code needs one import::

    from scaler_aws_batch import Client, submit_command

``Client`` (Scaler's client shipping the client's local modules) and ``LocalCodeSerializer`` load on first use:
jobs import this package too, and their image need not have Scaler.
"""

from typing import TYPE_CHECKING, Any

from scaler_aws_batch.commands import CommandResult, ShellCommand, submit_command

if TYPE_CHECKING:
    from scaler_aws_batch.client import Client
    from scaler_aws_batch.local_code import LocalCodeSerializer

__all__ = ["Client", "CommandResult", "LocalCodeSerializer", "ShellCommand", "submit_command"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Client":
        from scaler_aws_batch.client import Client

        return Client
    if name == "LocalCodeSerializer":
        from scaler_aws_batch.local_code import LocalCodeSerializer

        return LocalCodeSerializer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
