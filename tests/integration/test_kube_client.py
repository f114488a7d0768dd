"""The services' Kubernetes client against a real API server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster


def connections_to(port: int) -> set[int]:
    """Local ports of this process's established TCP connections to ``port`` on the loopback."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, closed since
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    local = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            here, there, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(there.rsplit(":", 1)[1], 16) == port:
                local.add(int(here.rsplit(":", 1)[1], 16))
    return local


async def test_a_connection_idle_for_a_quiet_spell_is_used_again(source: LocalCluster) -> None:
    """A burst after a quiet spell (aiohttp closes idle connections after 15 s by default) uses the
    connections it already has instead of opening and TLS-handshaking them all again."""
    async with KubeClient.from_kubeconfig(source.kubeconfig) as kube:
        port = urlsplit(kube.creds.server).port
        assert port is not None
        await kube.get("/version")
        before = connections_to(port)
        assert len(before) == 1
        await asyncio.sleep(16)
        await kube.get("/version")
        assert connections_to(port) == before
