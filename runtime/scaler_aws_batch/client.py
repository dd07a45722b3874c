"""``from scaler_aws_batch import Client``: Scaler's own client, shipping the client's local modules by default.

It is ``scaler.Client`` with one change: when no serializer is given, it uses
:class:`~scaler_aws_batch.local_code.LocalCodeSerializer`, so functions and classes from modules beside the client
script run in jobs whose image does not have them. Everything else (arguments, futures, ``submit_verbose``, ``map``,
graphs) is Scaler's.
"""

from __future__ import annotations

from typing import Any

import scaler
from scaler.client.serializer.mixins import Serializer

from scaler_aws_batch.local_code import LocalCodeSerializer

__all__ = ["Client"]

Serializer.register(LocalCodeSerializer)  # Scaler's serializer interface, declared without importing Scaler in jobs

#: ``serializer``'s position among ``scaler.Client.__init__``'s positional parameters (after ``self``).
_SERIALIZER_POSITION = 4


class Client(scaler.Client):  # type: ignore[misc]
    """``scaler.Client`` whose default serializer ships local code: ``Client(address="tcp://scheduler:2345")``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) <= _SERIALIZER_POSITION and kwargs.get("serializer") is None:
            kwargs["serializer"] = LocalCodeSerializer()
        super().__init__(*args, **kwargs)
