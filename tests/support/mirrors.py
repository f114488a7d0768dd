"""The sync side's NATS server (JetStream domain ``hub``, accepting leaf nodes) and the stand-by's
(its own domain, joined to it as a leaf node), as the three-cluster topology runs them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from services.devenv.natsd import LocalNats

HUB = "sync"
STANDBY = "standby"


def leaf_connected(leaf: LocalNats, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not leaf.monitor("/leafz").get("leafs"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the stand-by's server did not join the hub as a leaf node in {timeout}s")
        time.sleep(0.1)


@contextlib.contextmanager
def hub_and_leaf(root: Path) -> Iterator[tuple[LocalNats, LocalNats]]:
    hub = LocalNats(root / "hub", domain=HUB, leafnodes=True).start()
    leaf = LocalNats(root / "standby", domain=STANDBY, leaf_of=hub)
    try:
        leaf.start()
        leaf_connected(leaf)
        yield hub, leaf
    finally:
        leaf.stop()
        hub.stop()
