"""Loopback ports for the development environment: free, below the ephemeral range, never twice."""

from __future__ import annotations

import socket
from pathlib import Path

from services.devenv import ports


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    """An outgoing connection takes its local port from the ephemeral range and could take a port
    chosen there before the server meant to listen on it binds it."""
    low, _ = ports.ephemeral_range()
    chosen = ports.free_ports(20) + ports.free_ports(20)
    assert len(set(chosen)) == 40  # none twice, across calls too
    assert all(ports.LOWEST <= port < low for port in chosen)
    for port in chosen:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_chosen() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        assert not ports._bindable(taken)


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ports.ephemeral_range(tmp_path / "range") == (40000, 50000)
    assert ports.ephemeral_range(tmp_path / "missing") == (32768, 60999)
