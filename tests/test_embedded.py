"""The embedded scheduler's ports: free, distinct, and out of the way of the kernel's own port choices."""

from __future__ import annotations

import socket

from scaler_aws_batch.embedded import _ephemeral_range, free_ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3 and all(abs(a - b) > 2 for a in ports for b in ports if a != b)
    ephemeral = _ephemeral_range()
    if ephemeral is not None and ephemeral[0] > 11_000:
        assert all(port + 2 < ephemeral[0] for port in ports)
    for port in ports:
        for candidate in (port, port + 2):  # Scaler's scheduler binds its monitor socket on its port + 2
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", candidate))
