"""Free loopback ports for the development clusters, the broker and the services.

A port is chosen here (and found free by binding it) and bound by another process a moment later.
The kernel's own choice for ``bind(0)`` comes from the ephemeral range, the range every outgoing
connection takes its local port from too: with hundreds of connections opening meanwhile (an API
server's to its etcd, a syncer's 128 to the stand-by), one took a port chosen for a syncer's
listener before the syncer bound it ("address already in use", once in CI). So ports are chosen
at random below the ephemeral range, where no outgoing connection lands, and never twice by one
process."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000  # below: ports services on a developer's machine commonly listen on
_given: set[int] = set()


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernels_choice() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports, free now, outside the ephemeral range when it leaves room
    below it (else the kernel's choice), none handed out before by this process."""
    below = ephemeral_range()[0]
    out: list[int] = []
    for _ in range(100 * count + 1000):
        if len(out) == count:
            break
        port = random.randrange(LOWEST, below) if below - LOWEST >= 1000 else _kernels_choice()
        if port not in _given and _bindable(port):
            _given.add(port)
            out.append(port)
    if len(out) < count:
        raise RuntimeError(f"found only {len(out)} of {count} free loopback ports")
    return out
