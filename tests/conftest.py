"""Session-wide real environment: clusters and a nats-server started once, shared by all tests.

The source runs with the watch cache off so a test can force ``410 Gone`` by compacting etcd; the
destination runs in full mode (controller-manager, scheduler, kwok nodes) so Deployments really
become Available and "no Pod is ever created" is a real check."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from schemas import sealing
from services.devenv import binaries, bootstrap, processes
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats

ROOT_KEEP = os.environ.get("STANDBY_TEST_KEEP")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        for marker in ("unit", "integration", "e2e"):
            if f"/tests/{marker}/" in path:
                item.add_marker(getattr(pytest.mark, marker))


_ROOTS: list[Path] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows the tails of the component logs (apiservers, kwok, services)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and _ROOTS:
        for log in sorted((_ROOTS[0] / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            report.sections.append((f"log {log.name}", "\n".join(lines)))


@pytest.fixture(scope="session")
def env_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="standby-test-"))
    _ROOTS.append(root)
    yield root
    if not ROOT_KEEP:
        shutil.rmtree(root, ignore_errors=True)


def _require_binaries() -> None:
    try:
        for name in (*binaries.KUBE_BINARIES, *binaries.TOOL_BINARIES):
            binaries.kube_binary(name)
        binaries.nats_server()
    except binaries.MissingBinaryError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def nats_server(env_root: Path) -> Iterator[LocalNats]:
    _require_binaries()
    server = LocalNats(env_root).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def source(env_root: Path) -> Iterator[LocalCluster]:
    _require_binaries()
    cluster = LocalCluster("source", env_root, watch_cache=False, full=True, nodes=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def destination(env_root: Path) -> Iterator[LocalCluster]:
    _require_binaries()
    cluster = LocalCluster("destination", env_root, full=True, nodes=3).start()
    bootstrap.install_crds(cluster)
    bootstrap.ensure_namespace(cluster, bootstrap.SYSTEM_NAMESPACE)
    bootstrap.install_fence_policy(cluster)
    bootstrap.install_stream_keys([cluster], sealing.Keyring("test-1", {"test-1": sealing.new_key()}))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def registered(source: LocalCluster, destination: LocalCluster) -> LocalCluster:
    """The 2-cluster topology: ManagedClusters in the destination, source read-only."""
    reader = source.mint_credentials("standby-reader", namespace=bootstrap.SYSTEM_NAMESPACE,
                                     rules=bootstrap.READ_ONLY_RULES, cluster_scoped=True)
    bootstrap.register_cluster(destination, "source", reader)
    bootstrap.register_cluster(destination, "destination", destination.kubeconfig)
    return destination


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """A test that leaves a child process of its own behind fails."""
    before = set(map(id, processes.live_processes()))
    yield
    # Session clusters are shared; a test may restart one of their components on purpose.
    leaked = [p for p in processes.live_processes() if id(p) not in before and "/" not in p.name]
    for p in leaked:
        p.stop()
    assert not leaked, f"test left processes running: {[p.name for p in leaked]}"


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """A test that leaves asyncio tasks behind fails."""
    before = asyncio.all_tasks()
    yield
    pending = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    if pending:  # closing clients cancel their tasks; give them a moment to finish
        await asyncio.wait(pending, timeout=2)
    leaked = [t for t in pending if not t.done()]
    for t in leaked:
        t.cancel()
    gc.collect()  # an unclosed socket warns here, in the test that left it, not in a later one
    assert not leaked, f"test left asyncio tasks running: {[t.get_name() for t in leaked]}"


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalNats]:
    """A 3-node JetStream cluster of its own, with TLS on client connections and routes."""
    server = LocalNats(tmp_path / "nats-cluster", nodes=3, tls=True).start()
    try:
        yield server
    finally:
        server.stop()
